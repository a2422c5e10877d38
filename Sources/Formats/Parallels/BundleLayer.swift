import VDiskCore

/// One snapshot layer of a Parallels bundle: the disk's sectors split between storages, each
/// served by that snapshot's image in the storage (an expanding `.hds`, or a plain raw file).
/// Clusters an expanding image does not hold are the parent snapshot's (`backing`).
public final class BundleLayer: ImageLayer {
  /// One storage's image, over guest bytes [start, end).
  enum Piece: Sendable {
    case expanding(ParallelsLayer)
    case plain(ImageFile)
  }

  struct StoragePiece: Sendable {
    var start: UInt64
    var end: UInt64
    var piece: Piece
  }

  /// The descriptor: the layer's main file.
  public let file: ImageFile
  public let backing: (any ImageLayer)?
  public let virtualSize: UInt64
  /// This layer's snapshot GUID.
  public let snapshot: String
  let pieces: [StoragePiece]

  public var formatName: String { ParallelsDriver.name }

  init(
    file: ImageFile, snapshot: String, virtualSize: UInt64, pieces: [StoragePiece], backing: (any ImageLayer)?
  ) {
    self.file = file
    self.snapshot = snapshot
    self.virtualSize = virtualSize
    self.pieces = pieces
    self.backing = backing
  }

  /// The index of the piece holding guest byte `offset` (< virtualSize; the pieces cover the
  /// disk in order).
  func pieceIndex(_ offset: UInt64) -> Int {
    pieces.lastIndex(startingAtOrBefore: offset) { $0.start }
  }

  /// Contract as `ImageLayer.extent(at:maxLength:)`: the answer of the storage holding `offset`,
  /// cut at the storage's end. An expanding image smaller than its storage leaves the rest to the
  /// parent.
  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    let piece = pieces[pieceIndex(offset)]
    let inside = offset - piece.start
    let length = min(maxLength, piece.end - offset)
    switch piece.piece {
    case .plain(let raw):
      return Extent(offset: offset, length: length, mapping: .data(hostOffset: inside), file: raw)
    case .expanding(let image):
      guard inside < image.virtualSize else {
        return Extent(offset: offset, length: length, mapping: .unallocated, file: file)
      }
      let answer = try image.extent(at: inside, maxLength: min(length, image.virtualSize - inside))
      return Extent(offset: offset, length: answer.length, mapping: answer.mapping, file: answer.file)
    }
  }

  /// The bundle as this snapshot reads it: its virtual size, the snapshots of its chain (this
  /// one first, the root last) and each storage's sectors with the image every snapshot keeps
  /// in it, top first. (`files` gives `info` the bundle's disk size.)
  public var info: ImageInfo {
    let layers = bundleLayers
    let storages = pieces.indices.map { index in
      let piece = pieces[index]
      let images = layers.compactMap { layer -> InfoValue? in
        guard index < layer.pieces.count else { return nil }
        let (file, type) = layer.pieces[index].piece.fileAndType
        return .object([
          InfoField("snapshot", .string(layer.snapshot)), InfoField("type", .string(type)),
          InfoField("file", .string(file.path)),
        ])
      }
      return InfoValue.object([
        InfoField("start", .integer(Int64(piece.start))), InfoField("end", .integer(Int64(piece.end))),
        InfoField("images", .array(images)),
      ])
    }
    return ImageInfo(
      format: formatName, filename: file.path, virtualSize: virtualSize,
      formatSpecific: [
        InfoField("snapshot", .string(snapshot)),
        InfoField("snapshots", .array(layers.map { .string($0.snapshot) })),
        InfoField("storages", .array(storages)),
      ])
  }

  /// This layer and the snapshot layers of the same bundle below it, top first.
  var bundleLayers: [BundleLayer] {
    var layers: [BundleLayer] = [self]
    while let below = layers.last?.backing as? BundleLayer, below.file === file { layers.append(below) }
    return layers
  }
}

extension BundleLayer: FileSetLayer {
  /// The descriptor and every image of this snapshot's chain (each file once).
  public var files: [ImageFile] {
    var seen = Set<[UInt64]>()
    return ([file] + bundleLayers.flatMap { $0.pieces.map(\.piece.fileAndType.file) }).filter {
      seen.insert([$0.device, $0.inode]).inserted
    }
  }
}

extension BundleLayer.Piece {
  var fileAndType: (file: ImageFile, type: String) {
    switch self {
    case .plain(let raw): (raw, "plain")
    case .expanding(let layer): (layer.file, "expanding")
    }
  }
}
