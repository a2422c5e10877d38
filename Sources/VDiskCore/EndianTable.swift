/// The byte order of a table of integers as an image stores it (qcow2 and VHD are big-endian;
/// VMDK, VHDX and VDI little-endian).
public enum ByteOrder: Sendable {
  case bigEndian
  case littleEndian
}

extension Array where Element: FixedWidthInteger & UnsignedInteger {
  /// The integers stored in `order` at the start of `bytes`: `bytes.count / Element.bitWidth * 8`
  /// of them (a partial trailing integer is ignored), in native order.
  public init(decoding bytes: UnsafeRawBufferPointer, order: ByteOrder) {
    let width = MemoryLayout<Element>.size
    let count = bytes.count / width
    self.init(unsafeUninitializedCapacity: count) { buffer, initialized in
      if count > 0 {
        UnsafeMutableRawBufferPointer(buffer).copyMemory(
          from: UnsafeRawBufferPointer(rebasing: bytes[0..<count * width]))
      }
      buffer.convertInPlace(from: order)
      initialized = count
    }
  }

  /// The integers stored in `order` in `bytes` (see `init(decoding:order:)`).
  public init(decoding bytes: [UInt8], order: ByteOrder) {
    self = bytes.withUnsafeBytes { Self(decoding: $0, order: order) }
  }
}

extension UnsafeMutableBufferPointer where Element: FixedWidthInteger {
  /// Turns integers as stored in `order` into native order, in place.
  @inline(__always)
  func convertInPlace(from order: ByteOrder) {
    switch order {
    case .bigEndian:
      for i in indices { self[i] = Element(bigEndian: self[i]) }
    case .littleEndian:
      for i in indices { self[i] = Element(littleEndian: self[i]) }
    }
  }
}

/// What a table read does with the part of it that lies past end-of-file.
public enum PastEndOfFile: Sendable {
  /// Throw `.corrupt` naming the table.
  case corrupt
  /// Read it as zeros (QEMU does so for tables of a truncated image it is about to extend).
  case zeros
}

extension ImageFile {
  /// `count` integers stored in `order` at `offset`, in native order, read straight into the
  /// result. Throws `.corrupt` naming `what` when the table runs past end-of-file, unless
  /// `pastEnd` is `.zeros`.
  public func readTable<T: FixedWidthInteger & UnsignedInteger>(
    of type: T.Type, at offset: UInt64, count: Int, order: ByteOrder, what: @autoclosure () -> String,
    pastEnd: PastEndOfFile = .corrupt
  ) throws -> [T] {
    guard count > 0 else { return [] }
    return try [T](unsafeUninitializedCapacity: count) { buffer, initialized in
      let raw = UnsafeMutableRawBufferPointer(buffer)
      switch pastEnd {
      case .corrupt: try readExactly(into: raw, at: offset, what: what())
      case .zeros: try readFillingZeros(into: raw, at: offset)
      }
      buffer.convertInPlace(from: order)
      initialized = count
    }
  }
}
