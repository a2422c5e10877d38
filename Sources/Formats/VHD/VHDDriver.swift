import VDiskCore

/// How the opener meets vpc images: magic (the footer cookie at the start of dynamic disks or at
/// the end of every VHD), and a plan for a layer.
public enum VHDDriver: FormatDriver {
  public static let name = "vpc"
  public static let summary = "VHD, Virtual PC / Hyper-V v1 (fixed, dynamic, differencing)"

  public static func matches(_ probe: ProbeBytes) -> Bool {
    probe.head(has: Array("conectix".utf8)) || probe.tail(has: Array("conectix".utf8))
  }

  /// Reads the footer (the end one, or the copy at offset 0 when the end one is damaged), then
  /// for dynamic and differencing disks the dynamic header and the BAT's bounds, and for
  /// differencing disks the parent locators. Opened for writing, the layout is checked as the
  /// writer needs it (`VHDWriteStart.check`).
  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    let footer = try VHDFooter.locate(in: file)
    if footer.location == 0 {
      context.logger.warning(
        "VHD footer at the end of the file is damaged; using the copy at offset 0",
        metadata: ["path": "\(file.path)"])
    }
    let sectors = footer.virtualSize / 512
    guard sectors <= VHDFooter.maxSectors else {
      throw VDiskError.unsupported(
        file.path, "VHD of \(sectors) sectors is larger than the format's limit of \(VHDFooter.maxSectors)")
    }
    let virtualSize = footer.virtualSize

    guard footer.diskType != .fixed else {
      // A fixed disk is the data followed by the footer.
      guard virtualSize <= file.size - UInt64(VHDFooter.size) else {
        throw VDiskError.corrupt(
          file.path,
          "fixed VHD of \(virtualSize) bytes needs that much data before its footer, but the file has \(file.size) bytes"
        )
      }
      let start: VHDWriteStart? =
        if context.writable {
          try VHDWriteStart.check(file: file, footer: footer, header: nil, virtualSize: virtualSize)
        } else {
          nil
        }
      return LayerPlan(file: file, parent: nil) { backing, _ in
        let writer = try start.map {
          try VHDWriter(file: file, start: $0, table: nil, isDifferencing: false, virtualSize: virtualSize)
        }
        return VHDLayer(
          file: file, footer: footer, header: nil, table: nil, backing: backing, parentName: nil,
          parentPath: nil, writer: writer)
      }
    }

    let header = try VHDDynamicHeader(file: file, at: footer.dataOffset)
    var parent: ParentReference?
    if footer.diskType == .differencing {
      let candidates = try parentCandidates(header: header, file: file)
      let recorded = header.parentName.isEmpty ? (candidates.first ?? "") : header.parentName
      let expected = header.parentUUID
      let child = file.path
      parent = ParentReference(recordedName: recorded, candidates: candidates, format: "vpc") { layer in
        guard let vhd = layer as? VHDLayer else {
          throw VDiskError.corrupt(
            child, "parent \(layer.file.path) of differencing disk \(child) is \(layer.formatName), not vpc")
        }
        guard vhd.footer.uniqueID == expected else {
          throw VDiskError.corrupt(
            child,
            "parent \(layer.file.path) has unique id \(vhd.footer.uniqueID.text(uppercase: false)), but differencing disk \(child) expects \(expected.text(uppercase: false))"
          )
        }
      }
    }
    // Check the BAT's bounds now (its pages are read on demand into the chain's cache).
    let probeTable = try VHDBlockTable(
      file: file, header: header, virtualSize: virtualSize, cache: MetadataCache(budget: 0))
    // A writer relies on the layout being sound: checked before anything is written.
    let start: VHDWriteStart? =
      if context.writable {
        try VHDWriteStart.check(file: file, footer: footer, header: header, virtualSize: virtualSize)
      } else {
        nil
      }
    let parentName = parent?.recordedName
    return LayerPlan(file: file, parent: parent, metadataCoverage: probeTable.coverage) {
      backing, cache in
      // Without its parent (`info` of the top alone, `-o nobacking`), what the differencing
      // disk does not hold reads as zeros, like any layer at the bottom of a chain.
      let table = try VHDBlockTable(file: file, header: header, virtualSize: virtualSize, cache: cache)
      let writer = try start.map {
        try VHDWriter(
          file: file, start: $0, table: table, isDifferencing: footer.diskType == .differencing,
          virtualSize: virtualSize)
      }
      return VHDLayer(
        file: file, footer: footer, header: header, table: table, backing: backing, parentName: parentName,
        parentPath: backing?.file.path, writer: writer)
    }
  }
}
