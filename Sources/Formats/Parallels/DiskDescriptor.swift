import VDiskCore

/// A Parallels bundle's `DiskDescriptor.xml` (QEMU docs/interop/prl-xml.rst): the disk size,
/// the storages that split the disk's sectors between them (each with one image per snapshot),
/// and the snapshot tree. Validated: storages cover the disk exactly, in order; the current
/// snapshot's chain of parents ends at the root without a loop and within `maxLayers`; every
/// storage has an image for every snapshot of that chain.
struct DiskDescriptor: Sendable {
  /// prl-xml.rst: the predefined GUID of the top snapshot when there is no TopGUID.
  static let defaultTop = "{5fbaabe3-6958-40ff-92a7-860e329aab41}"
  /// prl-xml.rst: the ParentGUID of the root snapshot.
  static let noParent = "{00000000-0000-0000-0000-000000000000}"
  static let rootElement = "Parallels_disk_image"
  /// The most storages (split pieces) and snapshot layers a bundle may have.
  static let maxStorages = 4096
  static let maxLayers = 64
  /// The most image files (snapshot layers × storages) a bundle may open.
  static let maxImages = 1024

  enum ImageType: String, Sendable {
    /// prl-xml.rst: "Plain for raw files".
    case plain = "Plain"
    /// prl-xml.rst: "Compressed for expanding disks".
    case expanding = "Compressed"
  }

  struct Image: Sendable {
    var guid: String
    var type: ImageType
    /// As the descriptor names it (relative to the descriptor's folder, or absolute).
    var file: String
  }

  struct Storage: Sendable {
    /// Sectors [start, end) of the disk.
    var start: UInt64
    var end: UInt64
    /// Sectors per cluster of its expanding images.
    var blockSize: UInt64
    var images: [Image]
  }

  /// Disk_size, in sectors.
  var sectors: UInt64
  var storages: [Storage]
  /// The current snapshot's chain, top first, ending with the root.
  var layers: [String]

  var virtualSize: UInt64 { sectors * 512 }

  /// Whether `head` looks like a descriptor: markup whose root is Parallels_disk_image.
  static func matches(_ head: [UInt8]) -> Bool {
    let trimmed = head.drop {
      $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 || $0 == 0xEF || $0 == 0xBB || $0 == 0xBF
    }
    guard trimmed.first == 0x3C else { return false }  // '<'
    let marker = Array("<\(rootElement)".utf8)
    return head.indices.contains { i in head[i] == 0x3C && head[i...].starts(with: marker) }
  }

  /// A GUID as compared: trimmed and lower case.
  static func normalized(_ guid: String) -> String { guid.trimmingWhitespace.lowercased() }

  init(parsing bytes: [UInt8], path: String) throws {
    let root = try DescriptorXML.parse(bytes, path: path, what: "bundle descriptor")
    func fail(_ detail: String) -> VDiskError { VDiskError.corrupt(path, "DiskDescriptor.xml: \(detail)") }
    func number(_ element: XMLElement, _ name: String) throws -> UInt64 {
      guard let text = element.value(name) else { throw fail("<\(element.name)> has no <\(name)>") }
      guard let value = UInt64(text) else { throw fail("<\(name)> \"\(text.prefix(40))\" is not a number") }
      return value
    }

    guard root.name == Self.rootElement else {
      throw fail("the root element is <\(root.name)>, not <\(Self.rootElement)>")
    }
    guard let parameters = root.child("Disk_Parameters") else { throw fail("no <Disk_Parameters>") }
    sectors = try number(parameters, "Disk_size")
    guard sectors <= ParallelsHeader.maxVirtualSize / 512 else {
      throw fail("<Disk_size> of \(sectors) sectors exceeds 64 PiB")
    }
    if let padding = parameters.value("Padding"), padding != "0" {
      throw VDiskError.unsupported(
        path, "DiskDescriptor.xml: <Padding> \(padding.prefix(20)) is not supported (only 0)")
    }

    guard let storageData = root.child("StorageData") else { throw fail("no <StorageData>") }
    let storageElements = storageData.children("Storage")
    guard !storageElements.isEmpty, storageElements.count <= Self.maxStorages else {
      throw fail("\(storageElements.count) storages (between 1 and \(Self.maxStorages) are allowed)")
    }
    var storages: [Storage] = []
    for element in storageElements {
      var images: [Image] = []
      for image in element.children("Image") {
        guard let guid = image.value("GUID"), let file = image.value("File"), !file.isEmpty else {
          throw fail("an <Image> lacks its <GUID> or <File>")
        }
        let typeName = image.value("Type") ?? ""
        guard let type = ImageType(rawValue: typeName) else {
          throw VDiskError.unsupported(
            path,
            "DiskDescriptor.xml: image type \"\(typeName.prefix(40))\" is not supported (Plain or Compressed)"
          )
        }
        images.append(Image(guid: Self.normalized(guid), type: type, file: file))
      }
      storages.append(
        Storage(
          start: try number(element, "Start"), end: try number(element, "End"),
          blockSize: element.value("Blocksize").flatMap { UInt64($0) } ?? 0, images: images))
    }
    // The storages split [0, Disk_size) between them, in order, without gaps or overlaps.
    storages.sort { $0.start < $1.start }
    var next: UInt64 = 0
    for storage in storages {
      guard storage.start == next else {
        throw fail(
          storage.start < next
            ? "storage at sector \(storage.start) overlaps the one before it (which ends at \(next))"
            : "sectors \(next)–\(storage.start) are in no storage")
      }
      guard storage.end > storage.start else {
        throw fail("storage at sector \(storage.start) ends at \(storage.end)")
      }
      next = storage.end
    }
    guard next == sectors else { throw fail("the storages end at sector \(next), the disk at \(sectors)") }
    self.storages = storages

    // The current snapshot's chain (prl-xml.rst, "Snapshots element").
    let shots = root.child("Snapshots")
    var parents: [String: String] = [:]
    for shot in shots?.children("Shot") ?? [] {
      guard let guid = shot.value("GUID"), let parent = shot.value("ParentGUID") else {
        throw fail("a <Shot> lacks its <GUID> or <ParentGUID>")
      }
      parents[Self.normalized(guid)] = Self.normalized(parent)
    }
    let imageGUIDs = Set(storages.flatMap { $0.images.map(\.guid) })
    var top: String
    if let named = shots?.value("TopGUID") {
      top = Self.normalized(named)
    } else if imageGUIDs.contains(Self.defaultTop) || parents[Self.defaultTop] != nil {
      top = Self.defaultTop
    } else if imageGUIDs.count == 1, let only = imageGUIDs.first {
      top = only
    } else {
      throw fail(
        "no <TopGUID>, no image with the default top GUID \(Self.defaultTop), and more than one image")
    }
    var layers: [String] = []
    var current = top
    while current != Self.noParent {
      guard !layers.contains(current) else {
        throw fail("snapshot parents loop: \((layers + [current]).joined(separator: " → "))")
      }
      guard layers.count < Self.maxLayers else { throw fail("more than \(Self.maxLayers) snapshot layers") }
      layers.append(current)
      // A bundle without snapshots has one layer: its only image.
      guard let parent = parents[current] ?? (parents.isEmpty ? Self.noParent : nil) else {
        throw fail("snapshot \(current) has no <Shot>")
      }
      current = parent
    }
    guard !layers.isEmpty else { throw fail("the top snapshot is the null GUID") }
    guard layers.count * storages.count <= Self.maxImages else {
      throw VDiskError.unsupported(
        path,
        "DiskDescriptor.xml: \(layers.count) snapshot layers of \(storages.count) storages would open more than \(Self.maxImages) files"
      )
    }
    for guid in layers {
      for storage in storages where storage.images.filter({ $0.guid == guid }).count != 1 {
        throw fail("storage at sector \(storage.start) has no single image for snapshot \(guid)")
      }
    }
    self.layers = layers
  }

  /// The image of `storage` for snapshot `guid` (checked to exist when parsed).
  func image(of storage: Storage, snapshot guid: String) -> Image? {
    storage.images.first { $0.guid == guid }
  }
}
