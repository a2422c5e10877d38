import Foundation
import VDiskCore

/// What the guest may read after a crash: every byte as of the last completed flush, except
/// bytes written (or attempted) since, which may read as either their durable or their newest
/// value. Writes between two flushes must not overlap, so that "newest" is one value per byte.
public struct DurabilityModel {
  public private(set) var durable: [UInt8]
  private var latest: [UInt8]
  private var touched: [Bool]

  public init(_ initial: [UInt8]) {
    durable = initial
    latest = initial
    touched = [Bool](repeating: false, count: initial.count)
  }

  /// Records a write (or discard: zeros) that was attempted, whether or not it succeeded.
  public mutating func attempt(_ bytes: [UInt8], at offset: Int) {
    precondition(offset >= 0 && offset + bytes.count <= latest.count, "test write outside the disk")
    guard !bytes.isEmpty else { return }
    // An untouched range (the usual case) by memcpy: byte loops over megabytes are slow in debug builds.
    let untouched = touched.withUnsafeBytes { t in
      t.baseAddress.map { memchr($0 + offset, 1, bytes.count) == nil }
    }
    if untouched == true {
      latest.withUnsafeMutableBytes { to in
        bytes.withUnsafeBytes { from in
          if let to = to.baseAddress, let from = from.baseAddress {
            _ = memcpy(to + offset, from, bytes.count)
          }
        }
      }
      touched.withUnsafeMutableBytes { t in t.baseAddress.map { _ = memset($0 + offset, 1, bytes.count) } }
      return
    }
    for i in 0..<bytes.count {
      precondition(!touched[offset + i] || latest[offset + i] == bytes[i], "test writes overlap in a group")
      latest[offset + i] = bytes[i]
      touched[offset + i] = true
    }
  }

  /// A flush returned: everything attempted so far is durable.
  public mutating func flushed() {
    // memcpy into `durable`'s own buffer: a shared buffer would be copied byte by byte later.
    durable.withUnsafeMutableBytes { d in
      latest.withUnsafeBytes { l in
        if let to = d.baseAddress, let from = l.baseAddress { _ = memcpy(to, from, l.count) }
      }
    }
    touched.withUnsafeMutableBytes { t in t.baseAddress.map { _ = memset($0, 0, t.count) } }
  }

  /// The first byte of `content` that is neither durable nor a pending write's value.
  public func violation(in content: [UInt8]) -> String? {
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
