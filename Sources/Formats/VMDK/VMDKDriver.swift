import VDiskCore

/// How the opener meets vmdk images: magic, and a plan for a layer.
///
/// Three kinds of file open as a vmdk layer: a descriptor (text) naming extent files; a hosted
/// sparse extent ("KDMV", monolithicSparse / streamOptimized) whose embedded descriptor gives the
/// CID and the parent, and which is its own single extent (as QEMU opens it); and a COWD extent
/// opened directly.
public enum VMDKDriver: FormatDriver {
  public static let name = "vmdk"
  public static let summary = "VMware (flat and sparse extents, streamOptimized, COWD, seSparse)"

  public static func matches(_ probe: ProbeBytes) -> Bool {
    probe.head(has: SparseExtentHeader.magic) || probe.head(has: Array("# Disk DescriptorFile".utf8))
      || probe.head(has: COWDHeader.magic)
  }

  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    let head = try ProbeBytes(file)
    let descriptor: VMDKDescriptor
    var extents: [PlannedExtent]
    var isDirty = false
    if head.head(has: SparseExtentHeader.magic), let text = try descriptorOfEmptyExtent(file) {
      // QEMU (vmdk_open_vmdk4): a sparse extent of capacity 0 with an embedded descriptor is
      // only a container for that descriptor, whose extents are the disk.
      descriptor = try VMDKDescriptor(bytes: text, path: file.path)
      extents = try descriptor.extents.map { try plannedExtent($0, descriptorFile: file, context: context) }
    } else if head.head(has: SparseExtentHeader.magic) {
      let header = try SparseExtentHeader(file: file)
      if let bytes = try header.embeddedDescriptor(file) {
        descriptor = try VMDKDescriptor(bytes: bytes, path: file.path, requireExtents: false)
      } else {
        descriptor = try VMDKDescriptor(
          bytes: Array("createType=\"monolithicSparse\"".utf8), path: file.path,
          requireExtents: false)
      }
      let name = descriptor.extents.count == 1 ? descriptor.extents[0].fileName : nil
      extents = [
        PlannedExtent(
          sectors: header.capacity, kind: .sparse(file, header), fileName: name ?? baseName(file.path),
          type: "SPARSE")
      ]
      isDirty = header.isDirty
    } else if head.head(has: COWDHeader.magic) {
      let header = try COWDHeader(file: file)
      descriptor = try VMDKDescriptor(
        bytes: Array("createType=\"vmfsSparse\"".utf8), path: file.path,
        requireExtents: false)
      extents = [
        PlannedExtent(
          sectors: header.capacity, kind: .cowd(file, header), fileName: baseName(file.path),
          type: "VMFSSPARSE")
      ]
    } else {
      guard file.size <= UInt64(VMDKDescriptor.maxSize) else {
        throw VDiskError.corrupt(
          file.path, "descriptor file of \(file.size) bytes is larger than \(VMDKDescriptor.maxSize) bytes")
      }
      let bytes = try file.readBytes(at: 0, count: Int(file.size), what: "descriptor")
      descriptor = try VMDKDescriptor(bytes: bytes, path: file.path)
      extents = []
      for line in descriptor.extents {
        extents.append(try plannedExtent(line, descriptorFile: file, context: context))
      }
    }

    var parent: ParentReference?
    if descriptor.hasParent, let hint = descriptor.parentFileNameHint {
      let expected = descriptor.parentCID
      let child = file.path
      parent = ParentReference(
        recordedName: hint, candidates: [PlanContext.resolve(hint, relativeTo: file.path)], format: "vmdk",
        validate: { layer in try checkParent(layer, expectedCID: expected, child: child) })
    }
    let coverage = extents.reduce(UInt64(0)) { $0 + $1.metadataCoverage }
    return LayerPlan(file: file, parent: parent, metadataCoverage: coverage) {
      [extents, isDirty] backing, cache in
      var start: UInt64 = 0
      var built: [VMDKExtent] = []
      for planned in extents {
        let length = planned.sectors * 512
        built.append(
          VMDKExtent(
            start: start, length: length, store: try planned.store(cache: cache), fileName: planned.fileName,
            type: planned.type))
        start += length
      }
      return VMDKLayer(file: file, descriptor: descriptor, extents: built, backing: backing, isDirty: isDirty)
    }
  }

  /// The embedded descriptor of a sparse extent whose header gives capacity 0, else nil.
  static func descriptorOfEmptyExtent(_ file: ImageFile) throws -> [UInt8]? {
    let r = ByteReader(
      try file.readBytes(at: 0, count: SparseExtentHeader.size, what: "sparse extent header"), path: file.path
    )
    let capacity = try r.u64le(12)
    let offset = try r.u64le(28)
    let sectors = try r.u64le(36)
    guard capacity == 0, offset != 0 else { return nil }
    guard sectors > 0, sectors <= UInt64(VMDKDescriptor.maxSize / 512), offset <= file.size / 512,
      (offset + sectors) * 512 <= file.size
    else {
      throw VDiskError.corrupt(
        file.path, at: 28,
        "embedded descriptor at sector \(offset) (\(sectors) sectors) lies outside the file or is larger than 1 MiB"
      )
    }
    return try file.readBytes(at: offset * 512, count: Int(sectors * 512), what: "embedded descriptor")
  }

  /// The delta link check (vmdk spec, "Header": parentCID is "the content identifier of the
  /// parent"): the parent's CID must equal the child's parentCID.
  static func checkParent(_ layer: any ImageLayer, expectedCID: UInt32, child: String) throws {
    guard let parent = layer as? VMDKLayer, let cid = parent.cid else { return }
    guard cid == expectedCID else {
      throw VDiskError.corrupt(
        child,
        "parentCID \(String(expectedCID, radix: 16)) of \(child) does not match CID \(String(cid, radix: 16)) of its parent \(parent.file.path) (the parent changed after the delta was made)"
      )
    }
  }

  /// Opens and checks the file of one descriptor extent line.
  static func plannedExtent(_ line: VMDKExtentLine, descriptorFile: ImageFile, context: PlanContext) throws
    -> PlannedExtent
  {
    let path = descriptorFile.path
    let name = line.fileName ?? ""
    guard line.access != "NOACCESS" else {
      throw VDiskError.unsupported(path, "extent \"\(name)\" has access mode NOACCESS")
    }
    func open() throws -> ImageFile {
      _ = try VMDKDescriptor.extentPath(name, descriptorPath: path)
      return try context.openRelated(name, by: path, what: "extent file")
    }
    func sparseExtentSize(_ sectors: UInt64, of extentFile: ImageFile) throws {
      guard sectors >= line.sectors else {
        throw VDiskError.corrupt(
          path,
          "extent \"\(name)\" covers \(sectors) sectors (\(extentFile.path)) but the descriptor gives it \(line.sectors)"
        )
      }
    }
    switch line.type {
    case .zero:
      return PlannedExtent(sectors: line.sectors, kind: .zero, fileName: "", type: line.type.rawValue)
    case .flat, .vmfs:
      return PlannedExtent(
        sectors: line.sectors, kind: .flat(try open(), line.startSector * 512), fileName: name,
        type: line.type.rawValue)
    case .sparse, .vmfsSparse:
      // QEMU tells the two sparse formats apart by magic, whatever the line says.
      let extentFile = try open()
      let magic = try ProbeBytes(extentFile)
      if magic.head(has: SparseExtentHeader.magic) {
        let header = try SparseExtentHeader(file: extentFile)
        try sparseExtentSize(header.capacity, of: extentFile)
        return PlannedExtent(
          sectors: line.sectors, kind: .sparse(extentFile, header), fileName: name, type: line.type.rawValue)
      }
      if magic.head(has: COWDHeader.magic) {
        let header = try COWDHeader(file: extentFile)
        try sparseExtentSize(header.capacity, of: extentFile)
        return PlannedExtent(
          sectors: line.sectors, kind: .cowd(extentFile, header), fileName: name, type: line.type.rawValue)
      }
      throw VDiskError.corrupt(
        extentFile.path, at: 0,
        "\(line.type.rawValue) extent file (named by \(path)) has neither KDMV nor COWD magic")
    case .seSparse:
      return PlannedExtent(
        sectors: line.sectors, kind: .seSparse(try open()), fileName: name, type: line.type.rawValue)
    case .vmfsRDM, .vmfsRaw:
      throw VDiskError.unsupported(
        path, "\(line.type.rawValue) extent \"\(name)\" maps a physical device, which vdiskfs does not open")
    }
  }

  static func baseName(_ path: String) -> String {
    path.split(separator: "/").last.map(String.init) ?? path
  }
}

/// An extent whose file is open and whose header is checked, waiting for the chain's cache.
struct PlannedExtent: Sendable {
  enum Kind: Sendable {
    case zero
    case flat(ImageFile, UInt64)
    case sparse(ImageFile, SparseExtentHeader)
    case cowd(ImageFile, COWDHeader)
    case seSparse(ImageFile)
  }

  var sectors: UInt64
  var kind: Kind
  var fileName: String
  var type: String

  var metadataCoverage: UInt64 {
    switch kind {
    case .sparse(_, let h): h.gdEntries * UInt64(h.gtesPerGT) * 8
    case .cowd(_, let h): UInt64(h.gdEntries) * UInt64(COWDHeader.tableEntries) * 8
    case .seSparse: (sectors * 512 + SESparseExtent.tableCoverage - 1) / SESparseExtent.tableCoverage * 32768
    case .zero, .flat: 0
    }
  }

  func store(cache: MetadataCache) throws -> ExtentStore {
    switch kind {
    case .zero:
      return .zero
    case .flat(let file, let start):
      return .flat(file: file, start: start)
    case .sparse(let file, let h):
      return .sparse(
        try GrainDirectory(
          file: file, directoryOffset: h.gdOffset * 512, entries: Int(h.gdEntries),
          tableEntries: Int(h.gtesPerGT),
          grainSize: h.grainSize, capacity: sectors * 512, zeroedGrains: h.usesZeroedGrains,
          compressed: h.isCompressed, hasMarkers: h.hasMarkers, cache: cache))
    case .cowd(let file, let h):
      return .sparse(try h.directory(file: file, cache: cache))
    case .seSparse(let file):
      let se = try SESparseExtent(file: file, cache: cache)
      guard se.capacity >= sectors * 512 else {
        throw VDiskError.corrupt(
          file.path,
          "seSparse extent covers \(se.capacity / 512) sectors but its descriptor gives it \(sectors)")
      }
      return .seSparse(se)
    }
  }
}
