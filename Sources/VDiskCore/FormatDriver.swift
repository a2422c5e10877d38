/// How the opener meets one image format: its name, how to recognize its files, and how to plan a
/// layer over one. Every format target has one driver (`QCOW2Driver`, `VMDKDriver`, …), and the
/// registry in `ImageFormats` lists them in probe order; probing, `--format`, backing-format
/// names, `info` and the CLI's help all come from that list.
///
/// Drivers are caseless enums: everything is static, so a driver is named by its metatype.
public protocol FormatDriver: Sendable {
  /// The format's name as `qemu-img` names it (`qcow2`, `vpc`, `raw`, …): what `--format`,
  /// `-o format=`, a backing-format field and `info` say. Lower case.
  static var name: String { get }
  /// One line for `--help`: what the format is and which variants open.
  static var summary: String { get }
  /// Whether `probe` (the file's first 4 KiB and last 512 bytes) carries this format's magic. A
  /// format without magic (raw) answers true and must come last in probe order.
  static func matches(_ probe: ProbeBytes) -> Bool
  /// Reads and bounds `file`'s metadata and says how to build its layer once the backing layer
  /// (if the plan names a parent) is open. Throws a `VDiskError` naming the file on bad metadata.
  static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan
  /// The file to open when the user names a folder (`path`, resolved) that holds an image of this
  /// format as a bundle (a Parallels `.hdd` folder: its DiskDescriptor.xml); nil (the default)
  /// when this format has no bundles or `path` is not one.
  static func imageFile(inDirectory path: String) -> String?
}

extension FormatDriver {
  public static func imageFile(inDirectory path: String) -> String? { nil }
}
