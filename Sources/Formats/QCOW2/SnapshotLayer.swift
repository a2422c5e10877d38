import VDiskCore

/// A read-only view of one internal snapshot (qcow2 spec, "Snapshots"): the image's own file,
/// backing layer, external data file and compressed-cluster decoder, with the snapshot's L1 table
/// (loaded when the view is made; QEMU never changes a snapshot's L1 table, it only frees it with
/// the snapshot) and the snapshot's virtual size. Reading goes through the same `ClusterMapping`
/// and `L2EntryDecoder` as the active layer, so compressed clusters, zero clusters and
/// subclusters read exactly as they do there.
///
/// L2 tables are looked up in the chain's shared `MetadataCache` under the same keys
/// (file, offset) as the active layer's. That is safe because a table a snapshot names is never
/// changed in place while the snapshot exists: its refcount is at least 2 while the active L1
/// table shares it (and the active L1 entry's COPIED flag is clear), so `QCOW2Writer` copies it
/// before changing anything (`WriteState.writableL2`), writes the copy at a new offset, and only
/// drops a reference to the old one; data clusters are rewritten in place only when their entry
/// is COPIED and their refcount is exactly 1. The cache therefore never holds, for an offset a
/// snapshot names, anything but what the file holds there.
public final class QCOW2SnapshotLayer: ImageLayer {
  /// The snapshot table entry this view shows (as read when the view was made).
  public let snapshot: QCOW2Snapshot
  public let virtualSize: UInt64
  let source: QCOW2Layer
  let mapping: ClusterMapping

  /// `l1` holds the entries `virtualSize` needs, as stored.
  init(source: QCOW2Layer, snapshot: QCOW2Snapshot, virtualSize: UInt64, l1: [UInt64]) {
    self.source = source
    self.snapshot = snapshot
    self.virtualSize = virtualSize
    mapping = ClusterMapping(file: source.file, header: source.header, l1: l1, cache: source.metadataCache)
  }

  public var formatName: String { "qcow2" }
  public var file: ImageFile { source.file }
  public var backing: (any ImageLayer)? { source.backing }

  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    try mapping.extent(at: offset, maxLength: maxLength, dataFile: source.dataFile)
  }

  public func decode(
    _ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int
  ) throws {
    try source.decode(descriptor, into: buffer, skipping: skipping)
  }

  public var info: ImageInfo {
    var info = source.info
    info.virtualSize = virtualSize
    return info
  }
}

/// What `qemu-img map` shows beyond a layer's extents: the host cluster an L2 entry keeps for a
/// zero cluster, or for an unallocated subcluster of an allocated cluster (see
/// `ClusterMapping.keptHostCluster`). Allocation maps only; reading never needs it.
public protocol QCOW2KeptClusters: ImageLayer {
  /// On entry `offset < virtualSize` and `1 <= maxLength`. Returns how many bytes from `offset`
  /// the answer holds for (at least one) and the host offset of the byte at `offset`, or nil.
  func keptHostOffset(at offset: UInt64, maxLength: UInt64) throws -> (length: UInt64, hostOffset: UInt64?)
}

extension QCOW2SnapshotLayer: QCOW2KeptClusters {
  public func keptHostOffset(at offset: UInt64, maxLength: UInt64) throws -> (
    length: UInt64, hostOffset: UInt64?
  ) {
    try mapping.keptHostCluster(at: offset, maxLength: maxLength)
  }
}

extension QCOW2Layer: QCOW2KeptClusters {
  public func keptHostOffset(at offset: UInt64, maxLength: UInt64) throws -> (
    length: UInt64, hostOffset: UInt64?
  ) {
    try mapping.keptHostCluster(at: offset, maxLength: maxLength)
  }
}
