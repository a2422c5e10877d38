import VDiskCore

/// A cloop image as a read-only layer: every block is compressed; `decode` inflates it.
public final class CloopLayer: ImageLayer {
  public let file: ImageFile
  public let header: CloopHeader
  public let backing: (any ImageLayer)?
  let blocks: CompressedBlocks

  public var formatName: String { CloopDriver.name }
  public var virtualSize: UInt64 { header.virtualSize }

  init(file: ImageFile, header: CloopHeader, backing: (any ImageLayer)?) {
    self.file = file
    self.header = header
    self.backing = backing
    blocks = CompressedBlocks(file: file, blockSize: Int(header.blockSize))
  }

  /// How many blocks have been inflated (decompressed-block cache misses).
  public var decompressionCount: Int { blocks.units.decompressionCount }

  /// Contract as `ImageLayer.extent(at:maxLength:)`: one compressed block (or the part of it from
  /// `offset`) per answer.
  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    let blockSize = UInt64(header.blockSize)
    let index = Int(offset / blockSize)
    let start = header.offsets[index]
    let descriptor = CompressedDescriptor(
      hostOffset: start, compressedLength: Int(header.offsets[index + 1] - start),
      guestOffset: UInt64(index) * blockSize, decompressedLength: Int(blockSize))
    let length = min(maxLength, (UInt64(index) + 1) * blockSize - offset)
    return Extent(offset: offset, length: length, mapping: .compressed(descriptor), file: file)
  }

  public func decode(
    _ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int
  )
    throws
  {
    try blocks.decode(descriptor, into: buffer, skipping: skipping)
  }

  public var info: ImageInfo {
    ImageInfo(
      format: formatName, filename: file.path, virtualSize: virtualSize,
      clusterSize: UInt64(header.blockSize),
      formatSpecific: [InfoField("blocks", .integer(Int64(header.blockCount)))])
  }
}
