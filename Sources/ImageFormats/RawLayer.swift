import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// A raw image: guest bytes are the file's bytes. Holes in a sparse file are reported as zeros by
/// `allocationExtent` (SEEK_DATA/SEEK_HOLE); reads simply read the file.
public final class RawLayer: ImageLayer {
  public let file: ImageFile
  public var formatName: String { "raw" }
  public var backing: (any ImageLayer)? { nil }
  public var virtualSize: UInt64 { file.size }

  public init(file: ImageFile) {
    self.file = file
  }

  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    Extent(offset: offset, length: maxLength, mapping: .data(hostOffset: offset), file: file)
  }

  // Linux values; Glibc exports SEEK_DATA/SEEK_HOLE only with _GNU_SOURCE.
  private static let seekData: Int32 = 3
  private static let seekHole: Int32 = 4

  /// Asks the file system where data and holes are. lseek only moves the descriptor's offset,
  /// which nothing else uses (all I/O is positional).
  public func allocationExtent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    let fd = file.descriptor.rawValue
    guard offset <= UInt64(Int64.max) else { return try extent(at: offset, maxLength: maxLength) }
    let dataStart = lseek(fd, off_t(offset), Self.seekData)
    if dataStart < 0 {
      // ENXIO: no data at or after offset, the rest is a hole. Anything else (EINVAL on a file
      // system without support): say data, which is always correct.
      if errno == ENXIO { return Extent(offset: offset, length: maxLength, mapping: .zero, file: file) }
      return try extent(at: offset, maxLength: maxLength)
    }
    if UInt64(dataStart) > offset {
      return Extent(
        offset: offset, length: min(maxLength, UInt64(dataStart) - offset), mapping: .zero, file: file)
    }
    let holeStart = lseek(fd, off_t(offset), Self.seekHole)
    guard holeStart > 0, UInt64(holeStart) > offset else {
      return try extent(at: offset, maxLength: maxLength)
    }
    return Extent(
      offset: offset, length: min(maxLength, UInt64(holeStart) - offset), mapping: .data(hostOffset: offset),
      file: file)
  }

  public var info: ImageInfo {
    ImageInfo(format: "raw", filename: file.path, virtualSize: virtualSize)
  }
}

/// A raw file written in place: guest offset = host offset. Discard writes zeros (punching holes
/// would need fallocate, which the Swift Glibc module does not export).
extension RawLayer: WritableLayer {
  public func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    PreparedWrite(segments: [
      WriteSegment(file: file, hostOffset: offset, content: .guest(guestOffset: offset, length: Int(length)))
    ])
  }

  public func commitWrite(_ prepared: PreparedWrite) throws {}

  public func abortWrite(_ prepared: PreparedWrite) {}

  public func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>] {
    [offset..<offset + length]
  }

  public func flush() throws {
    try file.dataSync()
  }

  public func resize(to newSize: UInt64, allowShrink: Bool) throws {
    guard newSize >= virtualSize || allowShrink else {
      throw VDiskError(.invalidArgument, path: file.path, "shrinking needs -o allow_shrink")
    }
    try file.setSize(newSize)
  }
}
