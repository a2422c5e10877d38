import VDiskCore

/// How the opener meets a raw file: it has no magic (any file matches, so raw comes last in probe
/// order), names no parent and has no metadata to cache.
public enum RawDriver: FormatDriver {
  public static let name = "raw"
  public static let summary = "the guest bytes as they are (probed only when no other magic matches)"

  public static func matches(_ probe: ProbeBytes) -> Bool { true }

  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    LayerPlan(file: file, parent: nil) { _, _ in RawLayer(file: file) }
  }

  /// The plan for a raw image whose format was probed: its writes may not make it probe as any
  /// other format of `registry` (`RawLayer.vet`).
  public static func plan(_ file: ImageFile, probedBy registry: FormatRegistry) -> LayerPlan {
    LayerPlan(file: file, parent: nil) { _, _ in RawLayer(file: file, probedBy: registry) }
  }
}
