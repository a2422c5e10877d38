import VDiskCore

/// How the opener meets cloop images: the v2 preamble, and a plan for a read-only layer.
public enum CloopDriver: FormatDriver {
  public static let name = "cloop"
  public static let summary = "compressed loop image (cloop V2.0, zlib; read-only)"

  public static func matches(_ probe: ProbeBytes) -> Bool { CloopHeader.matches(probe.head) }

  /// Reads the header and the whole offsets table (held in memory, as QEMU does), checking every
  /// block's range. Writing is refused: cloop images are read-only by design.
  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    let header = try CloopHeader(file: file)
    if context.writable {
      throw VDiskError(.readOnly, path: file.path, "cloop images are read-only")
    }
    return LayerPlan(file: file, parent: nil, residentBytes: UInt64(header.offsets.count) * 8) { backing, _ in
      CloopLayer(file: file, header: header, backing: backing)
    }
  }
}
