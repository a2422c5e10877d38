import VDiskCore

/// How the opener meets Parallels images: a single `.hds` image by its signature, and a plan for
/// its layer.
public enum ParallelsDriver: FormatDriver {
  public static let name = "parallels"
  public static let summary = "Parallels expandable disk image (.hds: WithoutFreeSpace, WithouFreSpacExt)"

  public static func matches(_ probe: ProbeBytes) -> Bool {
    ParallelsHeader.matches(probe.head)
  }

  /// Reads and bounds the header; the BAT is read page by page into the chain's cache.
  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    let header = try ParallelsHeader(file: file)
    return LayerPlan(file: file, parent: nil, metadataCoverage: UInt64(header.batEntries) * 8) {
      backing, cache in
      try ParallelsLayer(file: file, header: header, backing: backing, cache: cache)
    }
  }
}
