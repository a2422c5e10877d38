import Logging
import Partitions
import Synchronization
import VDiskCore

/// The tree a mount shows, every view directory with the same shape (`disk.raw` + `partitions/`):
///
///     disk.raw                     the chain (read-write unless mounted read-only)
///     partitions/pN.raw            each partition of disk.raw (writable like disk.raw)
///     snapshots/<name>/disk.raw    each internal snapshot, read-only (+ partitions/)
///     layers/<n>-<file>/disk.raw   the chain from backing layer n down, read-only (+ partitions/)
///
/// Partition tables are read once and again after a write touches the first or last MiB of their
/// disk; the snapshot list is re-read when the image's snapshot table changes (QEMU may add or
/// delete snapshots while an image is mounted read-only).
public final class MountTree: TreeSource {
  struct ViewDirectory {
    var path: [String]
    var key: String
    var view: DiskView
    var partitions: [Partition]
    var isVolatile: Bool
  }

  struct State {
    var version: UInt64 = 1
    var rootPartitions: [Partition]?
    var snapshotGeneration: UInt64?
    var snapshots: [ViewDirectory] = []
    /// The root's `HostFileChanges` generation the partitions were read at.
    var hostGeneration: UInt64 = 0
  }

  /// Bytes at each end of a disk whose change makes its partition table be read again.
  static let tableZone: UInt64 = 1 << 20

  private let root: DiskView
  private let layers: [ViewDirectory]
  private let snapshotSource: (any SnapshotSource)?
  private let state = Mutex(State())
  private let logger: Logger

  /// `passthrough`: the root disk.raw may be passed through (`DiskView.passthrough`); no other
  /// view is (layers are backing files, snapshots and partitions are not their file's bytes).
  public init(
    chain: LayerChain, writable: Bool, allowShrink: Bool = false, passthrough: Bool = false, logger: Logger
  ) {
    self.logger = logger
    root = DiskView(chain: chain, writable: writable, allowShrink: allowShrink, passthrough: passthrough)
    snapshotSource = chain.top as? any SnapshotSource
    var layers: [ViewDirectory] = []
    for (depth, layer) in chain.layers.enumerated().dropFirst() {
      let name = "\(depth)-\(Self.baseName(layer.file.path))"
      let view = DiskView(chain: LayerChain(top: layer), writable: false)
      layers.append(
        ViewDirectory(
          path: ["layers", name], key: "layer:\(depth):\(layer.file.path)", view: view,
          partitions: Self.readPartitions(view, logger: logger), isVolatile: false))
    }
    self.layers = layers
  }

  // MARK: TreeSource

  public func version() -> UInt64 {
    // A writable passed-through disk.raw is written by the kernel, not through `didModify`: a
    // changed host file may hold a new partition table.
    if let changes = root.hostChanges {
      let generation = changes.generation()
      state.withLock { s in
        if s.hostGeneration != generation {
          s.hostGeneration = generation
          s.rootPartitions = nil
        }
      }
    }
    if state.withLock({ $0.rootPartitions == nil }) {
      let partitions = Self.readPartitions(root, logger: logger)
      state.withLock { s in
        s.rootPartitions = partitions
        s.version += 1
      }
    }
    if let source = snapshotSource {
      let generation = try? source.snapshotGeneration()
      if generation != state.withLock({ $0.snapshotGeneration }) {
        let snapshots = loadSnapshots(source)
        state.withLock { s in
          s.snapshots = snapshots
          s.snapshotGeneration = generation
          s.version += 1
        }
      }
    }
    return state.withLock { $0.version }
  }

  public func entries() -> [TreeEntry] {
    let (rootPartitions, snapshots) = state.withLock { ($0.rootPartitions ?? [], $0.snapshots) }
    var list: [TreeEntry] = []
    list.append(TreeEntry(path: ["disk.raw"], kind: .file(root)))
    list += Self.partitionEntries(of: root, partitions: rootPartitions, in: [], key: "disk", isVolatile: true)
    list.append(TreeEntry(path: ["snapshots"], kind: .directory))
    for directory in snapshots { list += entries(of: directory) }
    list.append(TreeEntry(path: ["layers"], kind: .directory))
    for directory in layers { list += entries(of: directory) }
    return list
  }

  public func didModify(_ view: DiskView, range: Range<UInt64>) {
    // A write through disk.raw or one of its partitions, in reach of the partition table.
    var absolute = range
    if let slice = view.content as? SliceView {
      guard slice.parent === root.content else { return }
      absolute = (range.lowerBound + slice.offset)..<(range.upperBound + slice.offset)
    } else if view.content !== root.content {
      return
    }
    let size = root.content.size
    let head = 0..<Self.tableZone
    let tail = (size > Self.tableZone ? size - Self.tableZone : 0)..<max(size, 1)
    if absolute.overlaps(head) || absolute.overlaps(tail) || absolute.upperBound > size {
      state.withLock { $0.rootPartitions = nil }
    }
  }

  // MARK: Building

  private func entries(of directory: ViewDirectory) -> [TreeEntry] {
    [
      TreeEntry(path: directory.path, key: directory.key, kind: .directory, isVolatile: directory.isVolatile),
      TreeEntry(
        path: directory.path + ["disk.raw"], key: directory.key + "/disk.raw", kind: .file(directory.view),
        isVolatile: directory.isVolatile),
    ]
      + Self.partitionEntries(
        of: directory.view, partitions: directory.partitions, in: directory.path, key: directory.key,
        isVolatile: directory.isVolatile)
  }

  private static func partitionEntries(
    of view: DiskView, partitions: [Partition], in path: [String], key: String, isVolatile: Bool
  ) -> [TreeEntry] {
    var list = [
      TreeEntry(
        path: path + ["partitions"], key: key + "/partitions", kind: .directory, isVolatile: isVolatile)
    ]
    for p in partitions {
      let slice = DiskView(
        content: SliceView(parent: view.content, offset: p.start, length: p.length), writable: view.writable,
        uncached: view.hostChanges != nil)
      list.append(
        TreeEntry(
          path: path + ["partitions", "p\(p.number).raw"], key: "\(key)/p\(p.number)@\(p.start)+\(p.length)",
          kind: .file(slice), isVolatile: true))
    }
    return list
  }

  private func loadSnapshots(_ source: any SnapshotSource) -> [ViewDirectory] {
    let list: [SnapshotInfo]
    do {
      list = try source.snapshots()
    } catch {
      logger.error("cannot read the snapshot table: \(error)")
      return []
    }
    let names = SnapshotInfo.directoryNames(list)
    let known = state.withLock { s in
      Dictionary(s.snapshots.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
    }
    var directories: [ViewDirectory] = []
    for (info, name) in zip(list, names) {
      let key = "snapshot:\(info.id):\(info.name):\(info.dateSeconds).\(info.dateNanoseconds)"
      if var existing = known[key] {
        existing.path = ["snapshots", name]
        directories.append(existing)
        continue
      }
      do {
        let view = DiskView(chain: LayerChain(top: try source.snapshotLayer(id: info.id)), writable: false)
        directories.append(
          ViewDirectory(
            path: ["snapshots", name], key: key, view: view,
            partitions: Self.readPartitions(view, logger: logger),
            isVolatile: true))
      } catch {
        logger.error("snapshot \(info.id) (\"\(info.name)\") cannot be shown: \(error)")
      }
    }
    return directories
  }

  static func readPartitions(_ view: DiskView, logger: Logger) -> [Partition] {
    do {
      return try PartitionTable.read(view.content, logger: logger)
    } catch {
      logger.warning("cannot read the partition table: \(error)")
      return []
    }
  }

  static func baseName(_ path: String) -> String {
    path.split(separator: "/").last.map(String.init) ?? path
  }

  /// The tree of an appliance (an OVA or OVF): read-only, fixed.
  ///
  ///     <name>.ovf                 each file given (the descriptor), as it is
  ///     disks/<n>-<file>/disk.raw  each disk (+ partitions/)
  public static func appliance(
    disks: [(name: String, chain: LayerChain)], files: [(name: String, chain: LayerChain)], logger: Logger
  ) -> StaticTreeSource {
    var list: [TreeEntry] = []
    for file in files {
      list.append(TreeEntry(path: [file.name], kind: .file(DiskView(chain: file.chain, writable: false))))
    }
    list.append(TreeEntry(path: ["disks"], kind: .directory))
    for disk in disks {
      let view = DiskView(chain: disk.chain, writable: false)
      let path = ["disks", disk.name]
      list.append(TreeEntry(path: path, kind: .directory))
      list.append(TreeEntry(path: path + ["disk.raw"], kind: .file(view)))
      list += partitionEntries(
        of: view, partitions: readPartitions(view, logger: logger), in: path,
        key: path.joined(separator: "/"),
        isVolatile: false)
    }
    return StaticTreeSource(list)
  }
}
