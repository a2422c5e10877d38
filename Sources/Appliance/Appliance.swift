import ImageFormats
import Logging
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// One virtual disk of an appliance: what the OVF says of it and the file holding it (a window
/// of the `.ova`, or a file next to the `.ovf`).
public struct ApplianceDisk: Sendable {
  /// 1-based, in `DiskSection` order.
  public var index: Int
  public var id: String
  /// The file's `ovf:href`.
  public var href: String
  /// `ovf:capacity` in bytes.
  public var capacity: UInt64
  /// `ovf:format`, a URI (e.g. ".../vmdk.html#streamOptimized").
  public var formatURI: String?
  public var file: ImageFile

  /// The directory name the mount shows it under: `<index>-<file name>`.
  public var directoryName: String {
    "\(index)-\(href.split(separator: "/").last.map(String.init) ?? href)"
  }

  /// Opens the disk as a one-layer chain, its format probed (streamOptimized VMDK usually). A
  /// disk naming a backing file or extent files is refused: an appliance's disks stand alone.
  /// `cacheSize`: the metadata cache's budget (default: what covers the disk, at most 32 MiB).
  public func open(registry: FormatRegistry = .standard, cacheSize: Int? = nil, logger: Logger) throws
    -> LayerChain
  {
    let format = try registry.probe(file)
    let path = file.path
    let context = PlanContext(logger: logger, writable: false) { name, _ in
      throw VDiskError.unsupported(path, "a disk inside an appliance names another file (\(name))")
    }
    let plan = try format.plan(file, context: context)
    if let parent = plan.parent {
      throw VDiskError.unsupported(
        path, "a disk inside an appliance names a backing file (\"\(parent.recordedName)\")")
    }
    let cache = MetadataCache(
      budget: cacheSize.map { max(0, $0) }
        ?? Int(min(plan.metadataCoverage, UInt64(defaultMetadataCacheCeiling))))
    return LayerChain(top: try plan.build(nil, cache))
  }
}

/// An OVF appliance opened without unpacking: an `.ova` (a tar holding the `.ovf` descriptor
/// first, then its disk files, maybe a `.mf` manifest), or a directory holding an `.ovf` and
/// its files, or the `.ovf` file itself. Disk files inside an `.ova` are read in place
/// (`WindowSource`). Names in the OVF are untrusted: an `ovf:href` must be a relative path
/// without `..` (no URL, no absolute path).
public final class Appliance: Sendable {
  public let path: String
  /// The descriptor's file name and bytes (shown at the mount's root).
  public let descriptorName: String
  public let descriptorBytes: [UInt8]
  /// The descriptor's file (a window of the `.ova`, or the `.ovf` itself).
  public let descriptorFile: ImageFile
  public let descriptor: OVFDescriptor
  public let disks: [ApplianceDisk]
  /// Files of the appliance by name (tar members, or files next to the `.ovf`), for `verify`.
  private let lookup: @Sendable (String) throws -> ImageFile?

  /// Whether `path` is an appliance: a directory with an `.ovf` in it, a file named `*.ovf` or
  /// `*.ova`, or a tar whose first member is an `.ovf` (OVF: "the OVF descriptor shall be the
  /// first file" of an OVA).
  public static func recognizes(_ path: String) -> Bool {
    if (try? FileDescriptorSource.fileType(atPath: path)) == .directory {
      return (try? descriptorInDirectory(path)) != nil
    }
    let lower = path.lowercased()
    if lower.hasSuffix(".ovf") || lower.hasSuffix(".ova") { return true }
    guard let file = try? ImageFile.open(path), file.size >= 512,
      let head = try? file.readBytes(at: 0, count: 512), TarIndex.looksLikeTar(head)
    else { return false }
    return TarHeader(head, at: 0, path: path).name.lowercased().hasSuffix(".ovf")
  }

  public convenience init(path: String, logger: Logger) throws {
    let isDirectory = (try? FileDescriptorSource.fileType(atPath: path)) == .directory
    guard isDirectory || path.lowercased().hasSuffix(".ovf") else {
      try self.init(archive: try ImageFile.open(path), logger: logger)
      return
    }
    let directory = isDirectory ? path : Self.parentDirectory(path)
    let name =
      isDirectory ? try Self.descriptorInDirectory(path) : String(path.split(separator: "/").last ?? "")
    let ovfPath = directory + "/" + name
    try self.init(
      path: path, descriptorName: name, ovfPath: ovfPath, descriptorFile: try ImageFile.open(ovfPath),
      lookup: { name in
        let candidate = directory + "/" + name
        guard access(candidate, F_OK) == 0 else { return nil }
        return try ImageFile.open(candidate)
      }, logger: logger)
  }

  /// An `.ova`: the tar `archive`, its descriptor the first `.ovf` member, every file a window of
  /// it. A hard link whose target is an earlier regular member reads as that member; any other
  /// member that is not a regular file (symbolic link, GNU sparse file, device, …) is refused by
  /// name and type when the appliance names it.
  public convenience init(archive: ImageFile, logger: Logger) throws {
    let path = archive.path
    let members = try TarIndex.read(archive)
    let index = Self.filesByName(members)
    guard
      let first = members.first(where: {
        $0.name.lowercased().hasSuffix(".ovf") && $0.kind != .other(type: UInt8(ascii: "5"))
      })
    else {
      throw VDiskError.corrupt(path, "the archive holds no .ovf descriptor")
    }
    let ovfPath = path + "/" + first.name
    @Sendable func window(_ name: String) throws -> ImageFile? {
      guard let member = index[name] else { return nil }
      guard member.kind == .regular else {
        throw VDiskError.unsupported(
          path,
          "member \"\(member.name)\" is a \(member.typeDescription), not a regular file; only regular files (and hard links to earlier ones) are read in place: unpack the appliance with tar"
        )
      }
      return try ImageFile(
        source: WindowSource(archive, offset: member.offset, length: member.size),
        path: path + "/" + member.name, isWritable: false)
    }
    guard let descriptorFile = try window(Self.normalized(first.name)) else {
      throw VDiskError.corrupt(path, "the archive holds no .ovf descriptor")
    }
    try self.init(
      path: path, descriptorName: String(first.name.split(separator: "/").last ?? ""), ovfPath: ovfPath,
      descriptorFile: descriptorFile, lookup: window, logger: logger)
  }

  /// The archive's members by normalized name (the first of a name wins), hard links to an
  /// earlier regular member resolved to its bytes. A link to anything else stays a link (and is
  /// refused when named).
  static func filesByName(_ members: [TarMember]) -> [String: TarMember] {
    var byName: [String: TarMember] = [:]
    for var member in members {
      let name = normalized(member.name)
      guard byName[name] == nil else { continue }
      if case .hardLink(let target) = member.kind, let earlier = byName[normalized(target)],
        earlier.kind == .regular
      {
        member.offset = earlier.offset
        member.size = earlier.size
        member.kind = .regular
      }
      byName[name] = member
    }
    return byName
  }

  private init(
    path: String, descriptorName: String, ovfPath: String, descriptorFile: ImageFile,
    lookup: @escaping @Sendable (String) throws -> ImageFile?, logger: Logger
  ) throws {
    self.path = path
    self.descriptorName = descriptorName
    self.descriptorFile = descriptorFile
    self.lookup = lookup
    descriptorBytes = try Self.readDescriptor(descriptorFile)
    guard TarHeader.isSafeName(descriptorName), !descriptorName.contains("/") else {
      throw VDiskError.corrupt(path, "descriptor name \"\(descriptorName)\" cannot be shown")
    }
    descriptor = try OVFDescriptor(parsing: descriptorBytes, path: ovfPath)

    let files = Dictionary(descriptor.files.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
    var disks: [ApplianceDisk] = []
    for (n, disk) in descriptor.disks.enumerated() {
      guard let ref = disk.fileRef else {
        logger.notice("\(ovfPath): disk \(disk.id) has no file (a blank disk), not shown")
        continue
      }
      guard let entry = files[ref] else {
        throw VDiskError.corrupt(
          ovfPath, "disk \(disk.id) names file \"\(ref)\", which <References> does not list")
      }
      try Self.checkHref(entry.href, ovf: ovfPath)
      switch entry.compression {
      case nil, "identity": break
      case "gzip":
        throw VDiskError.unsupported(
          ovfPath,
          "disk file \(entry.href) is gzip-compressed (ovf:compression=\"gzip\"), which cannot be read in place; unpack the appliance and gunzip it"
        )
      case let other?:
        throw VDiskError.unsupported(
          ovfPath, "disk file \(entry.href) has compression \"\(other)\", which is not supported")
      }
      guard let file = try lookup(entry.href) else {
        throw VDiskError(
          .notFound, path: ovfPath, "disk \(disk.id)'s file \(entry.href) is not in the appliance",
          errno: ENOENT)
      }
      if let size = entry.size, size != file.size {
        throw VDiskError.corrupt(
          ovfPath, "disk file \(entry.href) is \(file.size) bytes but the descriptor says \(size)")
      }
      disks.append(
        ApplianceDisk(
          index: n + 1, id: disk.id, href: entry.href, capacity: disk.capacity, formatURI: disk.format,
          file: file))
    }
    self.disks = disks
  }

  /// The descriptor as a one-layer raw chain (for the mount's root).
  public func descriptorChain(logger: Logger) throws -> LayerChain {
    let plan = try RawDriver.plan(descriptorFile, context: PlanContext(logger: logger))
    return LayerChain(top: try plan.build(nil, MetadataCache(budget: 0)))
  }

  /// The manifest's name: the descriptor's with `.mf` for `.ovf` (OVF 10.3).
  public var manifestName: String { String(descriptorName.dropLast(4)) + ".mf" }

  /// A file of the appliance by its name in the OVF or manifest (checked like an `ovf:href`);
  /// nil when it is absent.
  public func file(named name: String) throws -> ImageFile? {
    try Self.checkHref(name, ovf: path)
    return try lookup(name)
  }

  /// An `ovf:href` must be a plain relative path: no scheme, no absolute path, no `..`.
  static func checkHref(_ href: String, ovf: String) throws {
    let parts = href.split(separator: "/", omittingEmptySubsequences: false)
    guard !href.isEmpty, !href.hasPrefix("/"), !href.contains(":"), !href.contains("\\"),
      parts.allSatisfy({ !$0.isEmpty && $0 != ".." && $0 != "." }), TarHeader.isSafeName(href)
    else {
      throw VDiskError(
        .notPermitted, path: ovf,
        "file name \"\(href)\" is not a plain relative name inside the appliance (absolute paths, URLs and '..' are refused)"
      )
    }
  }

  /// A member's name as an `ovf:href` names it: without leading "./" and trailing "/"
  /// (directories).
  static func normalized(_ name: String) -> String {
    var name = name
    while name.hasPrefix("./") { name.removeFirst(2) }
    while name.count > 1, name.hasSuffix("/") { name.removeLast() }
    return name
  }

  static func parentDirectory(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
  }

  static func readDescriptor(_ file: ImageFile) throws -> [UInt8] {
    guard file.size <= UInt64(DescriptorXML.maxBytes) else {
      throw VDiskError.corrupt(file.path, "OVF descriptor of \(file.size) bytes is larger than 1 MiB")
    }
    return try file.readBytes(at: 0, count: Int(file.size), what: "OVF descriptor")
  }

  /// The one `.ovf` in `directory`.
  static func descriptorInDirectory(_ directory: String) throws -> String {
    guard let dir = opendir(directory) else {
      throw VDiskError(.notFound, path: directory, "cannot list the directory", errno: errno)
    }
    defer { closedir(dir) }
    var found: [String] = []
    while let entry = readdir(dir) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) {
        String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
      }
      if name.lowercased().hasSuffix(".ovf") { found.append(name) }
    }
    guard found.count == 1, let name = found.first else {
      throw VDiskError(
        .invalidArgument, path: directory,
        found.isEmpty
          ? "the directory holds no .ovf descriptor" : "the directory holds several .ovf descriptors")
    }
    return name
  }
}

extension TarHeader {
  /// A name the mount may show and a path may hold: valid UTF-8, no NUL, not too long.
  static func isSafeName(_ name: String) -> Bool {
    !name.isEmpty && !name.contains("\0") && name.utf8.count <= 4096
  }
}
