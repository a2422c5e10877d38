import VDiskCore

/// How the opener meets vdi images: magic, and a plan for a layer.
public enum VDIDriver {
  public static func matches(_ probe: ProbeBytes) -> Bool {
    probe.head(has: [0x7F, 0x10, 0xDA, 0xBE], at: 64)
  }

  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    throw VDiskError.unsupported(file.path, "vdi images are not supported yet")
  }
}
