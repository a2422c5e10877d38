import VDiskCore

/// How the opener meets vpc images: magic, and a plan for a layer.
public enum VHDDriver {
  public static func matches(_ probe: ProbeBytes) -> Bool {
    probe.head(has: Array("conectix".utf8)) || probe.tail(has: Array("conectix".utf8))
  }

  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    throw VDiskError.unsupported(file.path, "vpc images are not supported yet")
  }
}
