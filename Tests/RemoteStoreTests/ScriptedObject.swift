import Foundation
import RemoteStore
import Synchronization
import VDiskCore

/// A remote object in memory whose fetches a test scripts: counted, slowed, failed transiently a
/// number of times, or answered as changed.
final class ScriptedObject: RemoteObject {
  let location: String
  let version: RemoteVersion
  let parallelism = 8
  let isWritable: Bool
  struct Script {
    var bytes: [UInt8]
    var fetches = 0
    var fetchedOffsets: [UInt64] = []
    var transientFailures = 0
    var changed = false
    var delayMicroseconds: UInt32 = 0
    var stores = 0
  }
  let script: Mutex<Script>

  /// `claimedSize`: the size the store says, if not the bytes' count (a hostile server's word).
  init(
    _ bytes: [UInt8], location: String = "scripted://o", writable: Bool = false, claimedSize: UInt64? = nil
  ) {
    self.location = location
    version = RemoteVersion(size: claimedSize ?? UInt64(bytes.count), tag: "v1")
    isWritable = writable
    script = Mutex(Script(bytes: bytes))
  }

  var fetches: Int { script.withLock { $0.fetches } }

  func fetch(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
    let delay = script.withLock { $0.delayMicroseconds }
    if delay > 0 { usleep(delay) }
    return try script.withLock { script in
      script.fetches += 1
      script.fetchedOffsets.append(offset)
      if script.transientFailures > 0 {
        script.transientFailures -= 1
        throw RemoteFailure(.transient, location: location, "connection refused")
      }
      if script.changed { throw RemoteFailure(.changed, location: location, "ETag differs") }
      let start = Int(offset)
      let n = max(0, min(buffer.count, script.bytes.count - start))
      if n > 0 {
        script.bytes.withUnsafeBytes { bytes in
          buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + n)]))
        }
      }
      return n
    }
  }

  func store(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
    script.withLock { script in
      script.stores += 1
      let end = Int(offset) + buffer.count
      if end > script.bytes.count { script.bytes += [UInt8](repeating: 0, count: end - script.bytes.count) }
      script.bytes.replaceSubrange(Int(offset)..<end, with: buffer)
    }
  }

  func resize(to size: UInt64) throws {
    script.withLock { script in
      if Int(size) > script.bytes.count {
        script.bytes += [UInt8](repeating: 0, count: Int(size) - script.bytes.count)
      } else {
        script.bytes.removeLast(script.bytes.count - Int(size))
      }
    }
  }
}

/// Bytes that differ at every offset (so a misplaced block shows).
func patternBytes(_ count: Int, seed: UInt64 = 7) -> [UInt8] {
  var state = seed
  return (0..<count).map { _ in
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return UInt8(truncatingIfNeeded: state >> 56)
  }
}
