import VDiskCore

/// How the opener meets QED images: magic, and a plan (backing file with its format).
public enum QEDDriver: FormatDriver {
  public static let name = "qed"
  public static let summary = "QEMU enhanced disk (backing files, zero clusters)"

  public static func matches(_ probe: ProbeBytes) -> Bool { QEDHeader.hasMagic(probe.head) }

  /// Reads and bounds the header; the L1 entries the disk uses are read whole when the layer is
  /// built, L2 tables page by page into the chain's cache. Opened for writing, every table is
  /// checked first (`QEDWriteCheck`), which also settles a set need-check flag.
  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    var header = try QEDHeader(file: file)
    let writable = context.writable
    if writable { header = try QEDWriteCheck.check(header, file: file) }
    var parent: ParentReference?
    if let name = header.backingFileName {
      parent = ParentReference(
        recordedName: name, candidates: [PlanContext.resolve(name, relativeTo: file.path)],
        format: header.backingFormat)
    }
    // One L2 table per L1 entry the disk uses.
    let (coverage, overflow) = header.l1EntriesNeeded.multipliedReportingOverflow(by: header.tableBytes)
    return LayerPlan(
      file: file, parent: parent, metadataCoverage: overflow ? .max : coverage,
      residentBytes: header.l1EntriesNeeded * 8
    ) { [header] backing, cache in
      try QEDLayer(file: file, header: header, backing: backing, cache: cache, writable: writable)
    }
  }
}
