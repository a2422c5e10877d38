import VDiskCore

/// How the opener meets vhdx images: magic, and a plan for a layer.
public enum VHDXDriver {
  public static func matches(_ probe: ProbeBytes) -> Bool {
    probe.head(has: Array("vhdxfile".utf8))
  }

  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    throw VDiskError.unsupported(file.path, "vhdx images are not supported yet")
  }
}
