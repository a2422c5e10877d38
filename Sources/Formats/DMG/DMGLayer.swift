import VDiskCore

/// A DMG (UDIF) image as a read-only layer: chunks sorted by guest sector; zero and ignore
/// chunks and the gaps between chunks read as zeros, raw chunks map to the file, compressed
/// chunks decode through `ChunkDecoder`.
public final class DMGLayer: ImageLayer {
  public let file: ImageFile
  public let trailer: KolyTrailer
  public let map: ChunkMap
  public let backing: (any ImageLayer)?
  let decoder: ChunkDecoder

  public var formatName: String { DMGDriver.name }
  public var virtualSize: UInt64 { trailer.virtualSize }

  init(file: ImageFile, trailer: KolyTrailer, map: ChunkMap, backing: (any ImageLayer)?) {
    self.file = file
    self.trailer = trailer
    self.map = map
    self.backing = backing
    decoder = ChunkDecoder(file: file, largestChunk: map.largestCompressed)
  }

  /// How many chunks have been decoded (decompressed-unit cache misses).
  public var decompressionCount: Int { decoder.units.decompressionCount }

  /// Contract as `ImageLayer.extent(at:maxLength:)`: at most one chunk (or one gap between
  /// chunks) per answer.
  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    let (index, inside) = map.find(offset / 512)
    guard inside else {
      let next = index < map.chunks.count ? map.chunks[index].sector * 512 : virtualSize
      return Extent(offset: offset, length: min(maxLength, next - offset), mapping: .zero, file: file)
    }
    let chunk = map.chunks[index]
    let start = chunk.sector * 512
    let length = min(maxLength, chunk.end * 512 - offset)
    let mapping: Mapping
    switch chunk.kind {
    case .zero: mapping = .zero
    case .raw: mapping = .data(hostOffset: chunk.hostOffset + (offset - start))
    default:
      mapping = .compressed(
        CompressedDescriptor(
          hostOffset: chunk.hostOffset, compressedLength: Int(chunk.length), guestOffset: start,
          decompressedLength: Int(chunk.sectorCount) * 512))
    }
    return Extent(offset: offset, length: length, mapping: mapping, file: file)
  }

  public func decode(
    _ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int
  ) throws {
    let (index, inside) = map.find(descriptor.guestOffset / 512)
    guard inside, map.chunks[index].sector * 512 == descriptor.guestOffset else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: descriptor.hostOffset,
        "no DMG chunk starts at guest \(hex(descriptor.guestOffset))")
    }
    try decoder.decode(map.chunks[index], descriptor, into: buffer, skipping: skipping)
  }

  public var info: ImageInfo {
    var kinds: [String] = []
    for chunk in map.chunks where !kinds.contains("\(chunk.kind)") { kinds.append("\(chunk.kind)") }
    return ImageInfo(
      format: formatName, filename: file.path, virtualSize: virtualSize,
      formatSpecific: [
        InfoField("metadata", .string(trailer.usesResourceFork ? "resource fork" : "property list")),
        InfoField("partitions", .integer(Int64(map.partitions))),
        InfoField("chunks", .integer(Int64(map.chunks.count))),
        InfoField("chunk-kinds", .array(kinds.sorted().map { .string($0) })),
      ])
  }
}
