import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// Internal snapshots (qcow2 spec, "Snapshots"). Everything is read from the file at each call,
/// never from the header parsed at open: QEMU may create or delete snapshots while the image is
/// mounted read-only. A table changed under our feet yields a `VDiskError`, never a crash.
extension QCOW2Layer: SnapshotSource {
  /// The snapshot table as the file holds it now, every entry checked as `snapshotLayer(id:)`
  /// needs it (L1 table aligned, within the file and long enough for the snapshot's size).
  public func snapshotTable() throws -> [QCOW2Snapshot] {
    let (count, offset) = try SnapshotTable.headerFields(of: file)
    let table = try SnapshotTable.read(
      file: file, count: count, offset: offset, clusterSize: header.clusterSize)
    let fileSize = currentSize(of: file)
    for snapshot in table.entries {
      _ = try SnapshotTable.view(
        of: snapshot, header: header, imageSize: virtualSize, fileSize: fileSize, path: file.path)
    }
    return table.entries
  }

  public func snapshotGeneration() throws -> UInt64 {
    try SnapshotTable.generation(of: file)
  }

  public func snapshots() throws -> [SnapshotInfo] {
    let size = virtualSize
    return try snapshotTable().map { $0.info(imageSize: size) }
  }

  public func snapshotLayer(id: String) throws -> any ImageLayer {
    try snapshotView(id: id)
  }

  /// The read-only view of snapshot `id` (the first entry with that ID), its L1 table loaded now.
  public func snapshotView(id: String) throws -> QCOW2SnapshotLayer {
    let (count, offset) = try SnapshotTable.headerFields(of: file)
    let table = try SnapshotTable.read(
      file: file, count: count, offset: offset, clusterSize: header.clusterSize)
    guard let snapshot = table.entries.first(where: { $0.id == id }) else {
      throw VDiskError(.notFound, path: file.path, "no snapshot with ID \"\(id)\"")
    }
    let (size, entries) = try SnapshotTable.view(
      of: snapshot, header: header, imageSize: virtualSize, fileSize: currentSize(of: file), path: file.path)
    let l1 = try file.readL1Table(
      at: snapshot.l1TableOffset, count: entries, what: "L1 table of snapshot \(snapshot.id)")
    return QCOW2SnapshotLayer(source: self, snapshot: snapshot, virtualSize: size, l1: l1)
  }
}

/// The file's size now: QEMU may have grown it since it was opened (a block device, whose
/// st_size is 0, keeps the size seen at open). A file that shrank shows up as reads past its end.
func currentSize(of file: ImageFile) -> UInt64 {
  max(file.status()?.size ?? 0, file.size)
}
