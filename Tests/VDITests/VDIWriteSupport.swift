import Foundation
import ImageFormats
import TestSupport
import Testing
import VDI
import VDiskCore

// The pieces of Tests/QCOW2Tests/WriteSupport.swift and FaultInjectionSupport.swift the VDI
// write tests need (MirroredDisk, DurabilityModel, pattern), trimmed and made format-neutral.
// They belong in Tests/Fixtures; they are copied here so that this branch touches no shared file.

/// Opens a vdi for writing through the project's opener.
func openWritableVDI(_ image: String, cacheSize: Int? = nil) throws -> LayerChain {
  try openChain(image, OpenOptions(format: VDIDriver.self, cacheSize: cacheSize, writable: true))
}

/// What `qemu-img check -f vdi` says: exit status 0 is clean, 2 corrupt (a vdi has no leaks).
struct VDICheck: CustomStringConvertible {
  var status: Int32
  var output: String
  var isClean: Bool { status == 0 && output.contains("No errors were found") && !output.contains("ERROR") }
  var description: String { "qemu-img check exit \(status):\n\(output)" }

  init(_ image: String) throws {
    let r = try run("qemu-img", ["check", "-f", "vdi", image], check: false)
    status = r.status
    output = r.stdout + r.stderr
  }
}

/// `qemu-img compare` of a vdi against a raw file: whether identical, and what it said.
func vdiIdentical(_ image: String, _ raw: String) throws -> (Bool, String) {
  let r = try run("qemu-img", ["compare", "-f", "vdi", "-F", "raw", image, raw], check: false)
  return (r.status == 0 && r.stdout.contains("Images are identical"), r.stdout + r.stderr)
}

/// A little-endian u32 of a file.
func u32LE(_ path: String, at offset: UInt64) throws -> UInt32 {
  let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
  defer { try? handle.close() }
  try handle.seek(toOffset: offset)
  let data = try handle.read(upToCount: 4) ?? Data()
  return data.reversed().reduce(0) { $0 << 8 | UInt32($1) }
}

/// Size of a file in bytes.
func fileSize(_ path: String) throws -> UInt64 {
  (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
}

/// Whether `a[offset...]` starts with `b` (memcmp; fast in debug builds).
func same(_ a: [UInt8], _ offset: Int, _ b: [UInt8]) -> Bool {
  guard offset + b.count <= a.count else { return false }
  return a.withUnsafeBytes { x in
    b.withUnsafeBytes { y in
      guard let xb = x.baseAddress, let yb = y.baseAddress else { return true }
      return memcmp(xb + offset, yb, b.count) == 0
    }
  }
}

/// Bytes for write number `serial`: a value that changes every 512 bytes, so that misplaced or
/// shifted data shows. Never zero.
func pattern(_ count: Int, serial: UInt64) -> [UInt8] {
  var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: serial &* 29 &+ 1) | 1, count: count)
  var i = 0
  while i < count {
    bytes[i] = UInt8(truncatingIfNeeded: serial &+ UInt64(i >> 9) &* 7) | 1
    i += 512
  }
  return bytes
}

/// A chain opened for writing next to an in-memory mirror of what the guest should see.
final class MirroredDisk {
  let chain: LayerChain
  var mirror: [UInt8]
  var serial: UInt64 = 0

  init(chain: LayerChain, mirror: [UInt8]) {
    self.chain = chain
    self.mirror = mirror
  }

  var size: UInt64 { UInt64(mirror.count) }

  func write(at offset: UInt64, count: Int) throws {
    serial += 1
    let bytes = pattern(count, serial: serial)
    let n = try bytes.withUnsafeBytes { try chain.write($0, at: offset) }
    #expect(n == count)
    mirror.replaceSubrange(Int(offset)..<Int(offset) + count, with: bytes)
  }

  func discard(at offset: UInt64, count: Int, mode: DiscardMode) throws {
    try chain.discard(at: offset, length: UInt64(count), mode: mode)
    let n = min(count, mirror.count - Int(offset))
    mirror.replaceSubrange(Int(offset)..<Int(offset) + n, with: repeatElement(0, count: n))
  }

  /// Reads a range and compares it with the mirror; a description of the first difference, nil
  /// when equal.
  func verify(at offset: UInt64, count: Int) throws -> String? {
    let bytes = try chain.read(at: offset, count: count)
    if same(mirror, Int(offset), bytes) { return nil }
    let expected = Array(mirror[Int(offset)..<Int(offset) + bytes.count])
    let d = firstDifference(bytes, expected) ?? 0
    return "read of \(count) at \(hex(offset)) differs at \(hex(Int(offset) + d))"
  }

  func verifyAll() throws -> String? {
    var position: UInt64 = 0
    while position < size {
      let n = Int(min(8 << 20, size - position))
      if let d = try verify(at: position, count: n) { return d }
      position += UInt64(n)
    }
    return nil
  }

  /// Writes the mirror to a raw file for `qemu-img compare`.
  func saveMirror(_ path: String) throws {
    try Data(mirror).write(to: URL(fileURLWithPath: path))
  }
}

/// A vdi opened for writing over a `FaultInjectingSource`, built without the opener (no image
/// locks), so that a test can fail or cut its I/O.
struct FaultyVDI {
  let chain: LayerChain
  let source: FaultInjectingSource

  /// Opens `image`; with `crashAfter`, the source crashes after that many stages.
  init(_ image: String, cacheBudget: Int = 32 << 20, crashAfter: Int? = nil) throws {
    source = FaultInjectingSource(wrapping: try FileDescriptorSource.open(image, writable: true))
    if let crashAfter { source.crash(afterStage: crashAfter) }
    let file = try ImageFile(source: source, path: image, isWritable: true)
    let plan = try VDIDriver.plan(file, context: PlanContext(logger: logger, writable: true))
    chain = LayerChain(top: try plan.build(nil, MetadataCache(budget: cacheBudget)))
  }
}

/// What the guest may read after a crash: every byte as of the last completed flush, except
/// bytes written (or attempted) since, which may read as either their durable or their newest
/// value. Writes between two flushes must not overlap.
struct DurabilityModel {
  private(set) var durable: [UInt8]
  private var latest: [UInt8]
  private var touched: [Bool]

  init(_ initial: [UInt8]) {
    durable = initial
    latest = initial
    touched = [Bool](repeating: false, count: initial.count)
  }

  /// Records a write (or discard: zeros) that was attempted, whether or not it succeeded.
  mutating func attempt(_ bytes: [UInt8], at offset: Int) {
    for i in 0..<bytes.count {
      latest[offset + i] = bytes[i]
      touched[offset + i] = true
    }
  }

  /// A flush returned: everything attempted so far is durable.
  mutating func flushed() {
    durable = latest
    touched = [Bool](repeating: false, count: durable.count)
  }

  /// The first byte of `content` that is neither durable nor a pending write's value.
  func violation(in content: [UInt8]) -> String? {
    guard content.count == durable.count else { return "size \(content.count), expected \(durable.count)" }
    let piece = 4096
    for start in stride(from: 0, to: content.count, by: piece) {
      let count = min(piece, content.count - start)
      guard !same(durable, start, Array(content[start..<start + count])) else { continue }
      for i in start..<start + count where content[i] != durable[i] {
        if touched[i] && content[i] == latest[i] { continue }
        return "byte \(hex(i)) is \(content[i]), durable \(durable[i])"
          + (touched[i] ? " (pending \(latest[i]))" : " (not written since the last flush)")
      }
    }
    return nil
  }
}
