import VDiskCore

/// How the opener meets vhdx images: magic, and a plan for a layer (the parent of a differencing
/// disk, the BAT's cache need). Opening reads the headers, replays a pending log into memory
/// (never writing the file), then reads the region table, metadata and BAT through that replay.
/// Opening for writing then checks what the writer relies on and replays the log into the file
/// itself (`WritableOpen`).
public enum VHDXDriver: FormatDriver {
  public static let name = "vhdx"
  public static let summary = "Hyper-V VHDX (fixed, dynamic, differencing; writable through the log)"

  public static func matches(_ probe: ProbeBytes) -> Bool {
    probe.head(has: VHDXFileIdentifier.signature)
  }

  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    _ = try VHDXFileIdentifier.read(file)
    let header = try VHDXHeader.current(file)
    let (source, replayed) = try VHDXLog.replay(file, header: header, logger: context.logger)
    if replayed > 0 && !context.writable {
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
    var allocationEnd: UInt64 = 0
    if context.writable {
      // Checked on the log as replayed in memory, before the file changes: a hostile image is
      // refused (read-only) without being touched.
      allocationEnd = try WritableOpen.checkAllocations(
        file, bat: probeBAT, regions: regions, header: header, metadata: metadata)
    }
    let parentName = parent?.recordedName
    let (writable, opened, overlay, entries, end) = (
      context.writable, header, source, replayed, allocationEnd
    )
    let logger = context.logger
    // A writer keeps dirty pages pinned and writes back past three quarters of the budget: room
    // for twice the tables (at least 1 MiB), so that a disk whose BAT fits is written back only
    // when flushed.
    let tables = probeBAT.coverage
    let coverage = !writable ? tables : max(tables > UInt64.max / 2 ? .max : tables * 2, 1 << 20)
    // The replayed log's sectors stay in memory, and a BAT that fits `BAT.residentLimit` may.
    let resident =
      UInt64(source.sectors.count) * ReplayedFile.sectorSize + min(probeBAT.entryCount * 8, BAT.residentLimit)
    return LayerPlan(file: file, parent: parent, metadataCoverage: coverage, residentBytes: resident) {
      backing, cache in
      guard writable else {
        let bat = try BAT(overlay, region: regions.bat, metadata: metadata, cache: cache).loadingResident()
        return VHDXLayer(
          file: file, header: opened, source: overlay, replayedLogEntries: entries, regions: regions,
          metadata: metadata, bat: bat, backing: backing, parentName: parentName)
      }
      // The parent is open and accepted: now the file may change (log replayed into it, new
      // FileWriteGuid and LogGuid).
      let (current, replayedIntoFile) = try WritableOpen.prepare(file, header: opened, logger: logger)
      let view = ReplayedFile(file: file)
      // A writer's BAT changes, so it stays in pages in the cache rather than a resident copy.
      let bat = try BAT(view, region: regions.bat, metadata: metadata, cache: cache)
      let writer = VHDXWriter(file: file, header: current, bat: bat, metadata: metadata, allocationEnd: end)
      return VHDXLayer(
        file: file, header: current, source: view, replayedLogEntries: replayedIntoFile, regions: regions,
        metadata: metadata, bat: bat, backing: backing, parentName: parentName, writer: writer)
    }
  }
}
