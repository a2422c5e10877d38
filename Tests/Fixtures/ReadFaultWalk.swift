import Foundation
import SystemPackage
import Testing
import VDiskCore

/// An EIO on one read, whichever read it is: opening `image` read-only and reading the whole disk
/// in chunks is done once to count its reads R (headers, tables, bitmaps, data), then for each
/// N of 1...R (or a sample: the first `limit / 2`, which are mostly metadata, and an even spread
/// of the rest; every N with VDISKFS_FAULT_ALL=1) on a fresh chain (an empty metadata cache) whose Nth read fails with EIO:
/// - the one operation that made read N (opening, or one chunk) throws `.io` with errno EIO;
/// - every other chunk reads `expected`, and the failed chunk, read again right after (the fault
///   is used up), reads `expected` too: nothing from the failed read was kept.
///
/// `open` builds the chain over the source it is given (`FaultyChain(_:source:format:…)`).
public func expectEachReadFaultFailsOnlyThatRead(
  _ image: String, expected: [UInt8], limit: Int = 16,
  sourceLocation: SourceLocation = #_sourceLocation,
  open: (_ image: String, _ source: FaultInjectingSource) throws -> FaultyChain
) throws {
  let chunk = max(256 << 10, expected.count / 24)
  let chunks = stride(from: 0, to: expected.count, by: chunk).map { $0..<min($0 + chunk, expected.count) }
  func source() throws -> FaultInjectingSource {
    FaultInjectingSource(wrapping: try FileDescriptorSource.open(image, writable: false))
  }
  func expectEIO(_ error: any Error, _ context: String) {
    guard let e = error as? VDiskError else {
      Issue.record("\(context): not a VDiskError: \(error)", sourceLocation: sourceLocation)
      return
    }
    #expect(
      e.kind == .io && e.errno == Errno.ioError.rawValue, "\(context): \(e)", sourceLocation: sourceLocation)
  }

  let counting = try source()
  let whole = try open(image, counting)
  for range in chunks {
    let bytes = try whole.chain.read(at: UInt64(range.lowerBound), count: range.count)
    let right = same(expected, range.lowerBound, bytes) && bytes.count == range.count
    #expect(right, "fault-free read of \(range)", sourceLocation: sourceLocation)
  }
  let reads = counting.readCount
  #expect(reads >= 3, "\(reads) reads", sourceLocation: sourceLocation)

  let all = ProcessInfo.processInfo.environment["VDISKFS_FAULT_ALL"] == "1"
  var points = Array(1...(all ? reads : min(reads, max(1, limit / 2))))
  if reads > points.count {
    let rest = max(1, limit - points.count)
    let step = max(1, (reads - points.count) / rest)
    points += Array(stride(from: points.count + step, through: reads, by: step))
  }
  for n in points {
    let context = "EIO on read \(n) of \(reads)"
    let faulty = try source()
    faulty.failReads(numbered: n...n, with: .ioError)
    var failures = 0
    let disk: FaultyChain
    do {
      disk = try open(image, faulty)
    } catch {
      expectEIO(error, context + ", opening")
      failures += 1
      disk = try open(image, faulty)
    }
    for range in chunks {
      do {
        let bytes = try disk.chain.read(at: UInt64(range.lowerBound), count: range.count)
        let right = same(expected, range.lowerBound, bytes) && bytes.count == range.count
        #expect(right, "\(context): chunk \(range)", sourceLocation: sourceLocation)
      } catch {
        expectEIO(error, context + ", chunk \(range)")
        failures += 1
        let again = try disk.chain.read(at: UInt64(range.lowerBound), count: range.count)
        let right = same(expected, range.lowerBound, again) && again.count == range.count
        #expect(right, "\(context): chunk \(range) read again", sourceLocation: sourceLocation)
      }
    }
    #expect(
      failures == 1 && faulty.fired.count == 1, "\(context): \(failures) failures",
      sourceLocation: sourceLocation)
  }
}
