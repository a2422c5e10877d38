import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// How the opener meets Parallels images: a single `.hds` image by its signature, or a bundle by
/// its `DiskDescriptor.xml` (`ParallelsBundle`); and a plan for the layers.
public enum ParallelsDriver: FormatDriver {
  public static let name = "parallels"
  public static let summary =
    "Parallels disk image (.hds, both signatures, read-write; .hdd bundles read-only)"

  public static func matches(_ probe: ProbeBytes) -> Bool {
    ParallelsHeader.matches(probe.head) || DiskDescriptor.matches(probe.head)
  }

  /// A bundle folder opens by its descriptor.
  public static func imageFile(inDirectory path: String) -> String? {
    let descriptor = path + (path.hasSuffix("/") ? "" : "/") + ParallelsBundle.descriptorName
    return access(descriptor, F_OK) == 0 ? descriptor : nil
  }

  /// Reads and bounds the header; the BAT is read page by page into the chain's cache. Opened for
  /// writing, the whole BAT is checked first (`ParallelsWriteCheck`).
  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    guard ParallelsHeader.matches(try ProbeBytes(file).head) else {
      return try ParallelsBundle.plan(file, context: context)
    }
    let header = try ParallelsHeader(file: file)
    let dataEnd = context.writable ? try ParallelsWriteCheck.check(header, file: file) : nil
    // Opened for writing, the cache gets room for the whole BAT twice over, so that dirty pages
    // are written back only when asked (fsync, unmount) unless `--cache-size` says less.
    let pages = UInt64(header.batEntries) * 8
    let coverage = dataEnd == nil ? pages : max(2 * pages, 4 << 13)  // at least four pages of 1024 entries
    return LayerPlan(file: file, parent: nil, metadataCoverage: coverage) { backing, cache in
      try ParallelsLayer(file: file, header: header, backing: backing, cache: cache, dataEnd: dataEnd)
    }
  }
}
