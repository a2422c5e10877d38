import VDiskCore

/// How the opener meets Bochs images: the magic, and a plan for a read-only layer.
public enum BochsDriver: FormatDriver {
  public static let name = "bochs"
  public static let summary = "Bochs growing redolog image (read-only)"

  /// Bochs' magic alone: a Bochs image of another subtype is refused by name, not shown as raw.
  public static func matches(_ probe: ProbeBytes) -> Bool { BochsHeader.matches(probe.head) }

  /// Reads the header and the whole catalog (at most 4 MiB). Writing is refused, as by QEMU.
  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    let header = try BochsHeader(file: file)
    if context.writable {
      throw VDiskError(.readOnly, path: file.path, "writing Bochs images is not supported")
    }
    let catalog = try file.readTable(
      of: UInt32.self, at: header.catalogOffset, count: Int(header.catalogEntries), order: .littleEndian,
      what: "Bochs catalog")
    let bitmaps = UInt64(catalog.count) * (header.sectorsPerExtent + 7) / 8
    return LayerPlan(
      file: file, parent: nil, metadataCoverage: bitmaps, residentBytes: UInt64(catalog.count) * 4
    ) { backing, cache in
      BochsLayer(file: file, header: header, catalog: catalog, backing: backing, cache: cache)
    }
  }
}
