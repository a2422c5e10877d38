import VDiskCore

/// How the opener meets qcow version 1 images: magic and version, and a plan (backing file,
/// probed: qcow v1 records no backing format).
public enum QCOW1Driver: FormatDriver {
  public static let name = "qcow"
  public static let summary = "QEMU copy-on-write version 1 (backing files, compression; read-only)"

  /// The qcow magic and version 1. Stated as the format (`--format qcow`), an image of another
  /// version gets its header's error rather than a magic mismatch: `QCOW2Driver`, earlier in probe
  /// order, takes every version but 1.
  public static func matches(_ probe: ProbeBytes) -> Bool { QCOW1Header.hasMagic(probe.head) }

  /// Reads and bounds the header; the L1 table is read whole when the layer is built, L2 tables
  /// one by one into the chain's cache. Writing is refused with `.readOnly`, so a mount falls
  /// back to read-only and says why.
  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    let header = try QCOW1Header(file: file)
    if context.writable {
      throw VDiskError(
        .readOnly, path: file.path,
        "writing qcow (version 1) images is not supported (qemu-img convert -O qcow2 makes a writable copy)")
    }
    var parent: ParentReference?
    if let name = header.backingFileName {
      parent = ParentReference(
        recordedName: name, candidates: [PlanContext.resolve(name, relativeTo: file.path)], format: nil)
    }
    let (coverage, overflow) = header.l1Entries.multipliedReportingOverflow(by: header.l2Entries * 8)
    return LayerPlan(
      file: file, parent: parent, metadataCoverage: overflow ? .max : coverage,
      residentBytes: header.l1Entries * 8
    ) { backing, cache in
      try QCOW1Layer(file: file, header: header, backing: backing, cache: cache)
    }
  }
}
