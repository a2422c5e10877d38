import VDiskCore

/// How the opener meets vmdk images: magic, and a plan for a layer.
public enum VMDKDriver {
  public static func matches(_ probe: ProbeBytes) -> Bool {
    probe.head(has: Array("KDMV".utf8)) || probe.head(has: Array("# Disk DescriptorFile".utf8))
      || probe.head(has: Array("COWD".utf8))
  }

  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    throw VDiskError.unsupported(file.path, "vmdk images are not supported yet")
  }
}
