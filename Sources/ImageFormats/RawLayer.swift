import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// A raw image: guest bytes are the file's bytes. Holes in a sparse file are reported as zeros by
/// `allocationExtent` (SEEK_DATA/SEEK_HOLE); reads simply read the file.
public final class RawLayer: ImageLayer {
  public let file: ImageFile
  /// The engine's range locks for writes (unused on a read-only file).
  public let writeLocks = RangeLocks()
  public var formatName: String { "raw" }
  public var backing: (any ImageLayer)? { nil }
  public var virtualSize: UInt64 { file.size }

  public init(file: ImageFile) {
    self.file = file
  }

  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    Extent(offset: offset, length: maxLength, mapping: .data(hostOffset: offset), file: file)
  }

  /// Asks the file system where data and holes are (SEEK_DATA/SEEK_HOLE); all data when it
  /// cannot tell (no descriptor, no support).
  public func allocationExtent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    switch file.allocation(at: offset) {
    case .hole(let end):
      return Extent(offset: offset, length: min(maxLength, end - offset), mapping: .zero, file: file)
    case .data(let end):
      return Extent(
        offset: offset, length: min(maxLength, end - offset), mapping: .data(hostOffset: offset), file: file)
    case nil:
      return try extent(at: offset, maxLength: maxLength)
    }
  }

  public var info: ImageInfo {
    ImageInfo(format: "raw", filename: file.path, virtualSize: virtualSize)
  }
}

/// A raw file written in place: guest offset = host offset. Discard writes zeros (punching holes
/// would need fallocate, which the Swift Glibc module does not export).
extension RawLayer: WritableLayer {
  /// Nothing is allocated: writes of different bytes never conflict.
  public var writeUnit: UInt64 { 1 }

  public func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    PreparedWrite(targets: [WriteTarget(file: file, hostOffset: offset, guest: offset..<offset + length)])
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
