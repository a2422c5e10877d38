import VDiskCore

/// What an OVF descriptor (DMTF DSP0243) says about an appliance's disks: the files of its
/// `References` section and the virtual disks of its `DiskSection`. Names are matched by local
/// part (`ovf:href`, `href` and any other prefix alike).
public struct OVFDescriptor: Sendable {
  /// DSP0243 8.1, "File" element: `ovf:href` (a name relative to the descriptor), `ovf:id`,
  /// optional `ovf:size` and `ovf:compression` ("identity" or "gzip").
  public struct File: Sendable, Equatable {
    public var id: String
    public var href: String
    public var size: UInt64?
    public var compression: String?
  }

  /// DSP0243 9.1, "DiskSection": `ovf:capacity` in units of `ovf:capacityAllocationUnits`
  /// (default bytes), the file holding it (`ovf:fileRef`, absent for a blank disk) and the
  /// format URI (`ovf:format`).
  public struct Disk: Sendable, Equatable {
    public var id: String
    public var capacity: UInt64
    public var fileRef: String?
    public var format: String?
  }

  public var files: [File]
  public var disks: [Disk]

  /// Parses `bytes` (the `.ovf` file named `path` in errors).
  public init(parsing bytes: [UInt8], path: String) throws {
    let root = try DescriptorXML.parse(bytes, path: path, what: "OVF descriptor")
    guard root.localName == "Envelope" else {
      throw VDiskError.corrupt(path, "OVF descriptor's root element is <\(root.name)>, not <Envelope>")
    }
    files = []
    for element in root.childrenNamed("References").flatMap({ $0.childrenNamed("File") }) {
      guard let id = element.attribute("id"), let href = element.attribute("href") else {
        throw VDiskError.corrupt(path, "OVF <File> without ovf:id or ovf:href")
      }
      var size: UInt64?
      if let text = element.attribute("size") {
        guard let value = UInt64(text) else {
          throw VDiskError.corrupt(path, "OVF file \(id) has size \"\(text)\"")
        }
        size = value
      }
      if element.attribute("chunkSize") != nil {
        throw VDiskError.unsupported(
          path, "OVF file \(href) is split in chunks (ovf:chunkSize), which is not supported")
      }
      files.append(File(id: id, href: href, size: size, compression: element.attribute("compression")))
    }
    disks = []
    for element in root.childrenNamed("DiskSection").flatMap({ $0.childrenNamed("Disk") }) {
      guard let id = element.attribute("diskId") else {
        throw VDiskError.corrupt(path, "OVF <Disk> without ovf:diskId")
      }
      guard let text = element.attribute("capacity"), let capacity = UInt64(text) else {
        throw VDiskError.corrupt(path, "OVF disk \(id) has no numeric ovf:capacity")
      }
      let unit = try Self.allocationUnit(element.attribute("capacityAllocationUnits"), disk: id, path: path)
      guard capacity <= UInt64.max / unit else {
        throw VDiskError.corrupt(path, "OVF disk \(id)'s capacity overflows")
      }
      disks.append(
        Disk(
          id: id, capacity: capacity * unit, fileRef: element.attribute("fileRef"),
          format: element.attribute("format")))
    }
  }

  /// DSP0243 9.1 / DSP0004 programmatic units: "byte", "byte * 2^N" (N ≤ 60).
  static func allocationUnit(_ text: String?, disk: String, path: String) throws -> UInt64 {
    guard let text else { return 1 }
    let compact = text.filter { $0 != " " }
    if compact == "byte" { return 1 }
    if compact.hasPrefix("byte*2^"), let n = UInt64(compact.dropFirst(7)), n <= 60 { return 1 << n }
    throw VDiskError.unsupported(
      path, "OVF disk \(disk) has capacity units \"\(text)\", which are not supported")
  }
}

extension XMLElement {
  /// The name without its namespace prefix.
  var localName: String { name.split(separator: ":").last.map(String.init) ?? name }

  func childrenNamed(_ local: String) -> [XMLElement] { children.filter { $0.localName == local } }

  /// The attribute whose local name is `local`, whatever its prefix.
  func attribute(_ local: String) -> String? {
    if let plain = attributes[local] { return plain }
    return attributes.first { $0.key.split(separator: ":").last.map(String.init) == local }?.value
  }
}
