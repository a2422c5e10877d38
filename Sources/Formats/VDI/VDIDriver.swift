import VDiskCore

/// How the opener meets vdi images: magic, and a plan for a layer.
public enum VDIDriver: FormatDriver {
  public static let name = "vdi"
  public static let summary = "VirtualBox disk image (dynamic and static)"

  public static func matches(_ probe: ProbeBytes) -> Bool {
    probe.head(has: [0x7F, 0x10, 0xDA, 0xBE], at: 64)
  }

  /// Reads and bounds the header; the block map is read page by page into the chain's cache.
  /// Opened for writing, the whole map is checked first (`VDIWriteCheck`), and the cache gets
  /// room for every page twice over, so that dirty pages are written back only when asked
  /// (fsync, unmount) unless `--cache-size` says less.
  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    let header = try VDIHeader(file: file)
    let writable = context.writable
    if writable { try VDIWriteCheck.check(header, file: file) }
    let pages = UInt64(header.blockCount) * 8
    let coverage = writable ? max(2 * pages, 4 * UInt64(VDIBlockMap.pageEntries) * 8) : pages
    return LayerPlan(file: file, parent: nil, metadataCoverage: coverage) { backing, cache in
      try VDILayer(file: file, header: header, backing: backing, cache: cache, writable: writable)
    }
  }
}
