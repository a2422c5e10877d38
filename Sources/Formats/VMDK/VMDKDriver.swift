import Logging
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
  /// The most memory the grain directories of all of an image's extents may take (each is read
  /// whole). One extent's is at most 64 MiB (`SparseExtentHeader.maxGDEntries`), but a descriptor
  /// may list 8192 extents, which may all name one file.
  static let maxDirectoryBytes: UInt64 = 256 << 20

  public static func matches(_ probe: ProbeBytes) -> Bool {
    probe.head(has: SparseExtentHeader.magic) || probe.head(has: Array("# Disk DescriptorFile".utf8))
      || probe.head(has: COWDHeader.magic)
  }

  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    let head = try ProbeBytes(file)
    let writable = context.writable
    let descriptor: VMDKDescriptor
    var extents: [PlannedExtent]
    var isDirty = false
    // Where the descriptor's bytes are (for a CID update): offset, bytes reserved (embedded),
    // bytes.
    var descriptorPlace: (offset: UInt64, reserved: Int?, bytes: [UInt8])?
    if head.head(has: SparseExtentHeader.magic), let container = try descriptorOfEmptyExtent(file) {
      let (text, at) = container
      // QEMU (vmdk_open_vmdk4): a sparse extent of capacity 0 with an embedded descriptor is
      // only a container for that descriptor, whose extents are the disk.
      descriptor = try VMDKDescriptor(bytes: text, path: file.path)
      extents = try descriptor.extents.map {
        try plannedExtent($0, descriptorFile: file, context: context)
      }
      descriptorPlace = (at, text.count, text)
    } else if head.head(has: SparseExtentHeader.magic) {
      let header = try SparseExtentHeader(file: file)
      if let bytes = try header.embeddedDescriptor(file) {
        descriptor = try VMDKDescriptor(bytes: bytes, path: file.path, requireExtents: false)
        descriptorPlace = (header.descriptorOffset * 512, bytes.count, bytes)
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
    } else if head.head(has: COWDHeader.magic) {
      if writable { throw PlannedExtent.cowdIsReadOnly(file.path) }
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
      var directoryBytes: UInt64 = 0
      for line in descriptor.extents {
        let planned = try plannedExtent(line, descriptorFile: file, context: context)
        directoryBytes += planned.directoryBytes
        guard directoryBytes <= maxDirectoryBytes else {
          throw VDiskError.unsupported(
            file.path,
            "the extents' grain directories take more than \(maxDirectoryBytes >> 20) MiB of memory in all (at extent \(extents.count + 1) of \(descriptor.extents.count))"
          )
        }
        extents.append(planned)
      }
      descriptorPlace = (0, nil, bytes)
    }
    // vmdk spec, "File header": "Value to determine if the extent data file was cleanly closed".
    isDirty = extents.contains { $0.isDirty }

    var parent: ParentReference?
    if descriptor.hasParent, let hint = descriptor.parentFileNameHint {
      let expected = descriptor.parentCID
      let child = file.path
      parent = ParentReference(
        recordedName: hint, candidates: [PlanContext.resolve(hint, relativeTo: file.path)], format: "vmdk",
        validate: { layer in try checkParent(layer, expectedCID: expected, child: child) })
    }
    var cidPlace: DescriptorCID?
    if writable {
      for planned in extents { try planned.checkWritable() }
      if let place = descriptorPlace {
        cidPlace = try DescriptorCID.locate(
          file: file, offset: place.offset, reserved: place.reserved, bytes: place.bytes)
      }
      if isDirty {
        context.logger.notice(
          "\(file.path): a sparse extent was not closed cleanly (its dirty byte is set); vdiskfs writes it and leaves the byte set for VMware's consistency check"
        )
      }
    }
    let coverage = extents.reduce(UInt64(0)) { $0 + $1.metadataCoverage }
    let hasParent = descriptor.hasParent
    // Grain directories are read whole; a writer keeps a second, live copy.
    let directories = extents.reduce(UInt64(0)) { $0 + $1.directoryBytes }
    return LayerPlan(
      file: file, parent: parent, metadataCoverage: coverage,
      residentBytes: writable ? 2 * directories : directories
    ) {
      [extents, isDirty, cidPlace] backing, cache in
      var start: UInt64 = 0
      var built: [VMDKExtent] = []
      var writers: [ExtentWriter] = []
      for planned in extents {
        let length = planned.sectors * 512
        let (store, writer) = try planned.store(cache: cache, writable: writable)
        built.append(
          VMDKExtent(
            start: start, length: length, store: store, fileName: planned.fileName, type: planned.type))
        if writable {
          guard let writer else {
            throw VDiskError(.readOnly, path: file.path, "extent \"\(planned.fileName)\" cannot be written")
          }
          writers.append(writer)
        }
        start += length
      }
      var writer: VMDKWriter?
      if writable {
        try checkWritableFiles(top: file, extents: built, backing: backing)
        writer = try VMDKWriter(
          path: file.path, extents: built, writers: writers, descriptor: cidPlace, cid: descriptor.cid,
          hasBacking: backing != nil || hasParent, cache: cache)
      }
      return VMDKLayer(
        file: file, descriptor: descriptor, extents: built, backing: backing, isDirty: isDirty, writer: writer
      )
    }
  }

  /// Refuses a writable disk whose files alias each other or the backing chain (a hostile
  /// descriptor naming itself, its parent's files or one sparse extent twice): writes must never
  /// reach a file they do not belong to. Flat extents of one file must not overlap.
  static func checkWritableFiles(top: ImageFile, extents: [VMDKExtent], backing: (any ImageLayer)?) throws {
    struct Identity: Hashable {
      var device: UInt64
      var inode: UInt64
      init(_ file: ImageFile) {
        device = file.device
        inode = file.inode
      }
    }
    var below = Set<Identity>()
    for layer in backing?.chain ?? [] {
      below.insert(Identity(layer.file))
      if let vmdk = layer as? VMDKLayer {
        for e in vmdk.extents { if let f = e.file { below.insert(Identity(f)) } }
      }
    }
    func refuse(_ why: String) -> VDiskError {
      VDiskError(.readOnly, path: top.path, "refusing to write: \(why)")
    }
    var sparseFiles = Set<Identity>()
    var flatRanges: [Identity: [Range<UInt64>]] = [:]
    for e in extents {
      guard let f = e.file else { continue }
      let id = Identity(f)
      guard !below.contains(id) else {
        throw refuse("extent file \(f.path) also belongs to the backing chain")
      }
      switch e.store {
      case .sparse:
        guard sparseFiles.insert(id).inserted, flatRanges[id] == nil else {
          throw refuse("sparse extent file \(f.path) is named by more than one extent")
        }
      case .flat(_, let start):
        guard id != Identity(top), !sparseFiles.contains(id) else {
          throw refuse("flat extent file \(f.path) is the descriptor or a sparse extent")
        }
        let range = start..<start + e.length
        if flatRanges[id, default: []].contains(where: { $0.overlaps(range) }) {
          throw refuse("flat extents overlap in \(f.path)")
        }
        flatRanges[id, default: []].append(range)
      case .zero, .seSparse:
        break
      }
    }
  }

  /// The embedded descriptor of a sparse extent whose header gives capacity 0, else nil.
  static func descriptorOfEmptyExtent(_ file: ImageFile) throws -> ([UInt8], UInt64)? {
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
    return (
      try file.readBytes(at: offset * 512, count: Int(sectors * 512), what: "embedded descriptor"),
      offset * 512
    )
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
    if context.writable {
      // Refused before any extent file is opened for writing (the mount goes read-only).
      if line.access != "RW" {
        throw VDiskError(.readOnly, path: path, "extent \"\(name)\" has access mode \(line.access)")
      }
      switch line.type {
      case .zero:
        throw VDiskError(.readOnly, path: path, "a ZERO extent cannot hold written data")
      case .seSparse:
        throw VDiskError(
          .readOnly, path: path,
          "seSparse extents are read-only in vdiskfs (VMware never published how to write them; QEMU cannot either)"
        )
      default:
        break
      }
    }
    func open() throws -> ImageFile {
      _ = try VMDKDescriptor.extentPath(name, descriptorPath: path)
      return try context.openRelated(name, by: path, what: "extent file", writable: context.writable)
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
        if context.writable { throw PlannedExtent.cowdIsReadOnly(path) }
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

  /// Bytes of the grain directory read whole when the extent is opened (sparse and COWD).
  var directoryBytes: UInt64 {
    switch kind {
    case .sparse(_, let h): h.gdEntries * 4
    case .cowd(_, let h): UInt64(h.gdEntries) * 4
    default: 0
    }
  }

  /// The header's "is dirty" byte (vmdk spec, "File header"; hosted sparse extents only).
  var isDirty: Bool {
    if case .sparse(_, let h) = kind { return h.isDirty }
    return false
  }

  static func cowdIsReadOnly(_ path: String) -> VDiskError {
    VDiskError(.readOnly, path: path, "COWD (vmfsSparse) extents are read-only in vdiskfs")
  }

  /// Refuses (`.readOnly`, with the reason) an extent vdiskfs cannot write: stream-optimized
  /// (compressed) sparse extents, COWD and seSparse extents, ZERO extents.
  func checkWritable() throws {
    switch kind {
    case .sparse(let file, let h):
      if h.isCompressed || h.hasMarkers || h.fromFooter {
        throw VDiskError(
          .readOnly, path: file.path,
          "stream-optimized (compressed) vmdk images are read-only in vdiskfs (qemu-img convert -O vmdk makes a writable copy)"
        )
      }
    case .flat:
      break
    case .cowd(let file, _):
      throw Self.cowdIsReadOnly(file.path)
    case .seSparse(let file):
      throw VDiskError(.readOnly, path: file.path, "seSparse extents are read-only in vdiskfs")
    case .zero:
      throw VDiskError(.readOnly, path: fileName, "a ZERO extent cannot hold written data")
    }
  }

  var metadataCoverage: UInt64 {
    switch kind {
    case .sparse(_, let h): h.gdEntries * UInt64(h.gtesPerGT) * 8
    case .cowd(_, let h): UInt64(h.gdEntries) * UInt64(COWDHeader.tableEntries) * 8
    case .seSparse: (sectors * 512 + SESparseExtent.tableCoverage - 1) / SESparseExtent.tableCoverage * 32768
    case .zero, .flat: 0
    }
  }

  /// The extent's store, and (`writable`) its writer; extents that cannot be written were
  /// refused at planning (`checkWritable`).
  func store(cache: MetadataCache, writable: Bool) throws -> (ExtentStore, ExtentWriter?) {
    switch kind {
    case .flat(let file, let start):
      return (
        .flat(file: file, start: start),
        writable ? .flat(file: file, start: start, written: FlatWritten()) : nil
      )
    case .sparse(let file, let h):
      let directory = try GrainDirectory(
        file: file, directoryOffset: h.gdOffset * 512, entries: Int(h.gdEntries),
        tableEntries: Int(h.gtesPerGT),
        grainSize: h.grainSize, capacity: sectors * 512, zeroedGrains: h.usesZeroedGrains,
        compressed: h.isCompressed, hasMarkers: h.hasMarkers, cache: cache, writable: writable)
      guard writable, let live = directory.live else { return (.sparse(directory), nil) }
      let writer = try SparseExtentWriter(
        file: file, header: h, live: live, capacity: sectors * 512, cache: cache)
      return (.sparse(directory), .sparse(writer))
    default:
      if writable { try checkWritable() }
      return (try store(cache: cache), nil)
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
