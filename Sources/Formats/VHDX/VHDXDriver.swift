import VDiskCore

/// How the opener meets vhdx images: magic, and a plan for a layer (the parent of a differencing
/// disk, the BAT's cache need). Opening reads the headers, replays a pending log into memory
/// (never writing the file), then reads the region table, metadata and BAT through that replay.
public enum VHDXDriver: FormatDriver {
  public static let name = "vhdx"
  public static let summary = "Hyper-V VHDX (fixed, dynamic, differencing; log replayed in memory)"

  public static func matches(_ probe: ProbeBytes) -> Bool {
    probe.head(has: VHDXFileIdentifier.signature)
  }

  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    _ = try VHDXFileIdentifier.read(file)
    let header = try VHDXHeader.current(file)
    let (source, replayed) = try VHDXLog.replay(file, header: header, logger: context.logger)
    if replayed > 0 {
      context.logger.info(
        "replayed the VHDX log in memory; the file is unchanged",
        metadata: ["path": "\(file.path)", "entries": "\(replayed)"])
    }
    let regions = try RegionTable(source, header: header)
    let metadata = try VHDXMetadata(source, region: regions.metadata)

    var parent: ParentReference?
    if metadata.hasParent, let locator = metadata.parentLocator {
      let child = file.path
      parent = ParentReference(
        recordedName: locator.recordedName ?? "", candidates: locator.candidates(relativeTo: child),
        format: "vhdx"
      ) { layer in
        guard let vhdx = layer as? VHDXLayer else {
          throw VDiskError.corrupt(
            child, "parent \(layer.file.path) of differencing VHDX \(child) is \(layer.formatName), not vhdx")
        }
        guard locator.accepts(vhdx.header.dataWriteGuid) else {
          throw VDiskError.corrupt(
            child,
            "parent \(layer.file.path) has DataWriteGuid {\(vhdx.header.dataWriteGuid)}, but \(child) was made from {\(locator.linkage)} (parent_linkage): the parent changed or is the wrong file"
          )
        }
      }
    }
    // Check the BAT geometry now so that a bad image fails before any parent is opened.
    let probeBAT = try BAT(source, region: regions.bat, metadata: metadata, cache: MetadataCache(budget: 0))
    let parentName = parent?.recordedName
    return LayerPlan(file: file, parent: parent, metadataCoverage: probeBAT.coverage) { backing, cache in
      let bat = try BAT(source, region: regions.bat, metadata: metadata, cache: cache).loadingResident()
      return VHDXLayer(
        file: file, header: header, source: source, replayedLogEntries: replayed, regions: regions,
        metadata: metadata, bat: bat, backing: backing, parentName: parentName)
    }
  }
}
