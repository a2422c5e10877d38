import VDiskCore

/// Opens a Parallels bundle (a `.hdd` folder) by its `DiskDescriptor.xml`: one `BundleLayer` per
/// snapshot of the current chain, the root at the bottom, each over the files its storages name.
/// Bundles open read-only.
enum ParallelsBundle {
  /// The descriptor's name inside a bundle folder.
  static let descriptorName = "DiskDescriptor.xml"

  /// One storage's image of one snapshot, opened: a header for an expanding image, nil for plain.
  struct OpenedImage: Sendable {
    var start: UInt64
    var end: UInt64
    var file: ImageFile
    var header: ParallelsHeader?
  }

  static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    guard file.size <= UInt64(DescriptorXML.maxBytes) else {
      throw VDiskError.corrupt(
        file.path,
        "bundle descriptor of \(file.size) bytes is larger than \(DescriptorXML.maxBytes >> 20) MiB")
    }
    if context.writable {
      throw VDiskError(.readOnly, path: file.path, "writing Parallels bundles is not supported")
    }
    let bytes = try file.readBytes(at: 0, count: Int(file.size), what: "DiskDescriptor.xml")
    let descriptor = try DiskDescriptor(parsing: bytes, path: file.path)

    // Open every file of every layer now (names checked like any file an image names), top first.
    var layers: [(guid: String, pieces: [OpenedImage])] = []
    var coverage: UInt64 = 0
    for guid in descriptor.layers {
      var pieces: [OpenedImage] = []
      for storage in descriptor.storages {
        guard let image = descriptor.image(of: storage, snapshot: guid) else { continue }
        let opened = try context.openRelated(image.file, by: file.path, what: "Parallels image")
        let start = storage.start * 512
        let end = storage.end * 512
        var header: ParallelsHeader?
        switch image.type {
        case .expanding:
          guard ParallelsHeader.matches(try ProbeBytes(opened).head) else {
            throw VDiskError.corrupt(
              opened.path, "Parallels image named by \(file.path) has no Parallels signature")
          }
          let parsed = try ParallelsHeader(file: opened)
          coverage += UInt64(parsed.batEntries) * 8
          header = parsed
        case .plain:
          guard opened.size >= end - start else {
            throw VDiskError.corrupt(
              opened.path,
              "plain image of \(opened.size) bytes is smaller than its storage (sectors \(storage.start)–\(storage.end)) in \(file.path)"
            )
          }
        }
        pieces.append(OpenedImage(start: start, end: end, file: opened, header: header))
      }
      layers.append((guid, pieces))
    }

    let size = descriptor.virtualSize
    let opened = layers
    return LayerPlan(file: file, parent: nil, metadataCoverage: coverage) { backing, cache in
      var below = backing
      for layer in opened.reversed() {
        let pieces = try layer.pieces.map { piece in
          let kind: BundleLayer.Piece =
            if let header = piece.header {
              .expanding(try ParallelsLayer(file: piece.file, header: header, backing: nil, cache: cache))
            } else {
              .plain(piece.file)
            }
          return BundleLayer.StoragePiece(start: piece.start, end: piece.end, piece: kind)
        }
        below = BundleLayer(
          file: file, snapshot: layer.guid, virtualSize: size, pieces: pieces, backing: below)
      }
      guard let top = below else {
        throw VDiskError.corrupt(file.path, "DiskDescriptor.xml names no snapshot layer")
      }
      return top
    }
  }
}
