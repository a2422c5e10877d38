import Foundation
import ImageFormats
import Testing
import VDiskCore

/// Opens `image` (and its backing chain) for writing with the project's opener; `cacheSize` nil
/// is the default budget, `format` nil probes.
public func openWritable(
  _ image: String, cacheSize: Int? = nil, format: (any FormatDriver.Type)? = nil
) throws -> LayerChain {
  try openChain(image, OpenOptions(format: format, cacheSize: cacheSize, writable: true))
}

/// A chain opened for writing next to an in-memory mirror of what the guest should see. Every
/// write puts `pattern(count, serial:)` of the next serial.
public final class MirroredDisk {
  public let chain: LayerChain
  public var mirror: [UInt8]
  public var serial: UInt64 = 0

  public init(chain: LayerChain, mirror: [UInt8]) {
    self.chain = chain
    self.mirror = mirror
  }

  public var size: UInt64 { UInt64(mirror.count) }

  /// Writes `count` bytes at `offset` through the chain (which must take them all) and into the
  /// mirror.
  public func write(at offset: UInt64, count: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
    serial += 1
    let bytes = pattern(count, serial: serial)
    let n = try bytes.withUnsafeBytes { try chain.write($0, at: offset) }
    #expect(n == count, sourceLocation: sourceLocation)
    mirror.withUnsafeMutableBytes { m in
      bytes.withUnsafeBytes { b in
        if let mb = m.baseAddress, let bb = b.baseAddress { memcpy(mb + Int(offset), bb, count) }
      }
    }
  }

  /// Discards a range through the chain; the mirror reads zeros there (up to the disk's end).
  public func discard(at offset: UInt64, count: Int, mode: DiscardMode) throws {
    try chain.discard(at: offset, length: UInt64(count), mode: mode)
    let n = min(count, mirror.count - Int(offset))
    mirror.withUnsafeMutableBytes { m in
      if let mb = m.baseAddress { memset(mb + Int(offset), 0, n) }
    }
  }

  /// Reads a range (inside the disk) and compares it with the mirror; a description of the first
  /// difference (a short read is one), nil when equal.
  public func verify(at offset: UInt64, count: Int) throws -> String? {
    let bytes = try chain.read(at: offset, count: count)
    if bytes.count == count && same(mirror, Int(offset), bytes) { return nil }
    let expected = Array(mirror[Int(offset)..<Int(offset) + count])
    let d = firstDifference(bytes, expected) ?? 0
    return "read of \(count) at \(hex(offset)) differs at \(hex(Int(offset) + d))"
  }

  /// `verify` of the whole disk, 8 MiB at a time.
  public func verifyAll() throws -> String? {
    var position: UInt64 = 0
    while position < size {
      let n = Int(min(8 << 20, size - position))
      if let d = try verify(at: position, count: n) { return d }
      position += UInt64(n)
    }
    return nil
  }

  /// Writes the mirror to a raw file for `qemu-img compare`.
  public func saveMirror(_ path: String) throws {
    try Data(mirror).write(to: URL(fileURLWithPath: path))
  }
}
