import VDiskCore

/// How the opener meets qcow2: magic, and a plan (backing file, external data file, cache need).
public enum QCOW2Driver: FormatDriver {
  public static let name = "qcow2"
  public static let summary = "QEMU copy-on-write v2 and v3 (backing files, snapshots, compression)"

  /// The qcow magic with any version but 1 (qcow version 1 is `QCOW1Driver`'s; other versions are
  /// refused by the header, not shown as raw).
  public static func matches(_ probe: ProbeBytes) -> Bool {
    QCOW2Header.hasMagic(probe.head.prefix(4)) && !probe.head(has: [0, 0, 0, 1], at: 4)
  }

  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    let header = try QCOW2Header(file: file)
    let writable = context.writable
    if writable { try QCOW2Writer.checkCanWrite(header, path: file.path) }
    var dataFile: ImageFile?
    if let name = header.externalDataFileName {
      dataFile = try context.openRelated(name, by: file.path, what: "external data file")
    }
    var parent: ParentReference?
    if let name = header.backingFileName {
      parent = ParentReference(
        recordedName: name, candidates: [PlanContext.resolve(name, relativeTo: file.path)],
        format: header.backingFormat)
    }
    let logger = context.logger
    // A writer also keeps refcount blocks in the cache: room for them as QEMU sizes its refcount
    // cache (a quarter of the L2 cache, at least four clusters).
    let refcountRoom = writable ? max(4 * header.clusterSize, header.l2CoverageBytes / 4) : 0
    let (coverage, overflow) = header.l2CoverageBytes.addingReportingOverflow(refcountRoom)
    // The L1 entries the disk needs are read whole; a writer also keeps the whole L1 table and
    // the refcount table (both bounded by the header's checks).
    var resident = header.l1EntriesNeeded * 8
    if writable {
      resident += UInt64(header.l1Size) * 8 + UInt64(header.refcountTableClusters) * header.clusterSize
    }
    return LayerPlan(
      file: file, parent: parent, metadataCoverage: overflow ? .max : coverage, residentBytes: resident
    ) {
      [dataFile] backing, cache in
      try QCOW2Layer(
        file: file, header: header, backing: backing, dataFile: dataFile, metadataCache: cache,
        logger: logger,
        writable: writable)
    }
  }
}
