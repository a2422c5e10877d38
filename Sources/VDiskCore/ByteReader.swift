/// Bounds-checked decoding of fixed-layout fields from a buffer read out of an image. Every
/// accessor throws `.corrupt` (naming the file and the absolute offset) instead of trapping when a
/// field would run past the buffer.
public struct ByteReader: Sendable {
  public let bytes: [UInt8]
  /// Path of the image the bytes came from, for error messages.
  public let path: String
  /// Absolute offset in the file of `bytes[0]`, for error messages.
  public let baseOffset: UInt64

  public init(_ bytes: [UInt8], path: String, baseOffset: UInt64 = 0) {
    self.bytes = bytes
    self.path = path
    self.baseOffset = baseOffset
  }

  public var count: Int { bytes.count }

  @inline(__always)
  func check(_ offset: Int, _ width: Int, _ what: @autoclosure () -> String) throws {
    guard offset >= 0, width >= 0, offset <= bytes.count, width <= bytes.count - offset else {
      throw VDiskError.corrupt(
        path, at: baseOffset &+ UInt64(max(0, offset)),
        "\(what()) at \(hex(baseOffset &+ UInt64(max(0, offset)))) runs past the end of its structure")
    }
  }

  public func u8(_ offset: Int, _ what: @autoclosure () -> String = "field") throws -> UInt8 {
    try check(offset, 1, what())
    return bytes[offset]
  }

  public func u16be(_ offset: Int, _ what: @autoclosure () -> String = "field") throws -> UInt16 {
    UInt16(truncatingIfNeeded: try uint(offset, 2, bigEndian: true, what()))
  }

  public func u32be(_ offset: Int, _ what: @autoclosure () -> String = "field") throws -> UInt32 {
    UInt32(truncatingIfNeeded: try uint(offset, 4, bigEndian: true, what()))
  }

  public func u64be(_ offset: Int, _ what: @autoclosure () -> String = "field") throws -> UInt64 {
    try uint(offset, 8, bigEndian: true, what())
  }

  public func u16le(_ offset: Int, _ what: @autoclosure () -> String = "field") throws -> UInt16 {
    UInt16(truncatingIfNeeded: try uint(offset, 2, bigEndian: false, what()))
  }

  public func u32le(_ offset: Int, _ what: @autoclosure () -> String = "field") throws -> UInt32 {
    UInt32(truncatingIfNeeded: try uint(offset, 4, bigEndian: false, what()))
  }

  public func u64le(_ offset: Int, _ what: @autoclosure () -> String = "field") throws -> UInt64 {
    try uint(offset, 8, bigEndian: false, what())
  }

  /// `count` raw bytes starting at `offset`.
  public func bytes(_ offset: Int, count: Int, _ what: @autoclosure () -> String = "field") throws
    -> ArraySlice<UInt8>
  {
    try check(offset, count, what())
    return bytes[offset..<offset + count]
  }

  private func uint(_ offset: Int, _ width: Int, bigEndian: Bool, _ what: @autoclosure () -> String) throws
    -> UInt64
  {
    try check(offset, width, what())
    var value: UInt64 = 0
    if bigEndian {
      for i in 0..<width { value = value << 8 | UInt64(bytes[offset + i]) }
    } else {
      for i in (0..<width).reversed() { value = value << 8 | UInt64(bytes[offset + i]) }
    }
    return value
  }
}

extension UnsafeRawBufferPointer {
  /// Big-endian UInt64 at a byte offset the caller has already bounds-checked.
  @inline(__always)
  public func loadBigEndianUInt64(at offset: Int) -> UInt64 {
    UInt64(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))
  }
}
