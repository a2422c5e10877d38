import Foundation
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// A qcow2 image opened for writing over a `FaultInjectingSource`, built layer by layer (no
/// opener, no image locks), so that a test can fail or cut its I/O.
struct FaultyImage {
  let chain: LayerChain
  let source: FaultInjectingSource

  /// Opens `image`; with `crashAfter`, the source crashes after that many stages, counting
  /// those of opening.
  init(_ image: String, writable: Bool = true, cacheBudget: Int = 32 << 20, crashAfter: Int? = nil) throws {
    source = FaultInjectingSource(wrapping: try FileDescriptorSource.open(image, writable: writable))
    if let crashAfter { source.crash(afterStage: crashAfter) }
    let file = try ImageFile(source: source, path: image, isWritable: writable)
    let plan = try QCOW2Driver.plan(file, context: PlanContext(logger: logger, writable: writable))
    chain = LayerChain(top: try plan.build(nil, MetadataCache(budget: cacheBudget)))
  }

  /// Where guest `offset` lives in the image file; nil when it is not stored there as data.
  func hostOffset(of offset: UInt64) throws -> UInt64? {
    guard case .data(let host) = try chain.top.extent(at: offset, maxLength: 1).mapping else { return nil }
    return host
  }
}

/// What the guest may read after a crash: every byte as of the last completed flush, except
/// bytes written (or attempted) since, which may read as either their durable or their newest
/// value. Writes between two flushes must not overlap, so that "newest" is one value per byte.
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
      precondition(!touched[offset + i] || latest[offset + i] == bytes[i], "test writes overlap in a group")
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
    // memcmp by 4 KiB pieces first: byte loops over megabytes are slow in debug builds.
    let piece = 4096
    for start in stride(from: 0, to: content.count, by: piece) {
      let count = min(piece, content.count - start)
      guard !same(durable, start, Array(content[start..<start + count])) else { continue }
      if let v = violation(in: content, range: start..<start + count) { return v }
    }
    return nil
  }

  private func violation(in content: [UInt8], range: Range<Int>) -> String? {
    for i in range where content[i] != durable[i] {
      if touched[i] && content[i] == latest[i] { continue }
      return "byte \(hex(i)) is \(content[i]), durable \(durable[i])"
        + (touched[i] ? " (pending \(latest[i]))" : " (not written since the last flush)")
    }
    return nil
  }
}

/// Requires that `qemu-img check` finds no corruption (leaked clusters are allowed: exit 0 or 3).
func expectNoCorruption(_ image: String, _ context: String, sourceLocation: SourceLocation = #_sourceLocation)
  throws
{
  let report = try qemuCheck(image)
  let corrupt =
    !(report.status == 0 || report.status == 3) || report.errors > 0 || report.output.contains("ERROR")
  if corrupt { Issue.record("\(context): \(report)", sourceLocation: sourceLocation) }
}
