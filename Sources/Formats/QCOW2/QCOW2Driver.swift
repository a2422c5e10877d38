import VDiskCore

/// How the opener meets qcow2: magic, and a plan (backing file, external data file, cache need).
public enum QCOW2Driver: FormatDriver {
  public static let name = "qcow2"
  public static let summary = "QEMU copy-on-write v2 and v3 (backing files, snapshots, compression)"

  public static func matches(_ probe: ProbeBytes) -> Bool { QCOW2Header.hasMagic(probe.head.prefix(4)) }

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
    return LayerPlan(file: file, parent: parent, metadataCoverage: header.l2CoverageBytes) {
      [dataFile] backing, cache in
      try QCOW2Layer(
        file: file, header: header, backing: backing, dataFile: dataFile, metadataCache: cache,
        logger: logger,
        writable: writable)
    }
  }
}
