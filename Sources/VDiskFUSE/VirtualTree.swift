import Logging
import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// One inode of the tree.
public struct VirtualNode: Sendable {
  public enum Kind: Sendable {
    case directory
    case file(DiskView)
  }

  public let inode: UInt64
  public let name: String
  /// The parent's inode (the root is its own parent).
  public let parent: UInt64
  public let kind: Kind
  /// Whether the node can change while mounted (cached briefly by the kernel).
  public let isVolatile: Bool

  public var isDirectory: Bool {
    if case .directory = kind { return true }
    return false
  }
}

/// What `stat` shows for a node, free of any C type.
public struct NodeAttributes: Sendable, Equatable {
  public var inode: UInt64
  public var isDirectory: Bool
  /// Permission bits only (0o555, 0o444, …).
  public var permissions: UInt32
  public var linkCount: UInt32
  public var size: UInt64
  /// 512-byte blocks held as data.
  public var blocks: UInt64
  public var uid: UInt32
  public var gid: UInt32
  public var accessed: NodeTime
  public var modified: NodeTime
  /// Status change time.
  public var changed: NodeTime
}

/// Owner and times every node shows: those of the image file at mount time.
public struct NodeMetadata: Sendable, Equatable {
  public var uid: UInt32
  public var gid: UInt32
  public var seconds: Int
  public var nanoseconds: Int

  public init(uid: UInt32 = 0, gid: UInt32 = 0, seconds: Int = 0, nanoseconds: Int = 0) {
    self.uid = uid
    self.gid = gid
    self.seconds = seconds
    self.nanoseconds = nanoseconds
  }
}

/// A directory entry as readdir lists it.
public struct DirectoryEntry: Sendable, Equatable {
  public var name: String
  public var inode: UInt64
  public var isDirectory: Bool
}

/// The inode model of the mounted file system, over a `TreeSource` (`/`, `disk.raw`,
/// `partitions/`, `snapshots/<name>/`, `layers/<n>-<name>/`). Pure Swift; the FUSE callbacks
/// translate its answers. Inodes are stable per entry key and never reused; directory lookups
/// and listings refresh from the source when its version changed.
public final class VirtualTree: Sendable {
  public static let rootInode: UInt64 = 1

  struct State {
    var version: UInt64?
    var nodes: [UInt64: VirtualNode] = [:]
    var children: [UInt64: [UInt64]] = [:]
    var inodeByKey: [String: UInt64] = [:]
    var nextInode: UInt64 = 2
    /// Mode, owner and times set with chmod/chown/utimens, per inode, for the mount's lifetime.
    var overrides: [UInt64: NodeOverride] = [:]
  }

  let source: any TreeSource
  let state = Mutex(State())
  /// Counts writes (data, discard, resize) to any view: cached `st_blocks` older than it are stale.
  let writeGeneration = Atomic<UInt64>(0)
  public let metadata: NodeMetadata
  private let logger: Logger

  public init(source: any TreeSource, metadata: NodeMetadata = NodeMetadata(), logger: Logger) {
    self.source = source
    self.metadata = metadata
    self.logger = logger
    refresh()
  }

  /// A fixed tree built with `Builder`.
  public convenience init(_ builder: Builder, metadata: NodeMetadata = NodeMetadata(), logger: Logger) {
    self.init(source: StaticTreeSource(builder.entries), metadata: metadata, logger: logger)
  }

  /// `/` holding just `disk.raw`, the whole chain.
  public convenience init(
    chain: LayerChain, writable: Bool, allowShrink: Bool = false, metadata: NodeMetadata = NodeMetadata(),
    logger: Logger
  ) {
    var builder = Builder()
    builder.addFile(
      named: "disk.raw", view: DiskView(chain: chain, writable: writable, allowShrink: allowShrink))
    self.init(builder, metadata: metadata, logger: logger)
  }

  /// Collects the entries of a fixed tree; inodes are handed out in insertion order (root 1).
  public struct Builder {
    fileprivate var entries: [TreeEntry] = []
    private var paths: [UInt64: [String]] = [VirtualTree.rootInode: []]
    private var next: UInt64 = 2

    public init() {}

    @discardableResult
    public mutating func addDirectory(named name: String, in parent: UInt64 = VirtualTree.rootInode) -> UInt64
    {
      add(name, parent, .directory)
    }

    @discardableResult
    public mutating func addFile(
      named name: String, view: DiskView, in parent: UInt64 = VirtualTree.rootInode
    )
      -> UInt64
    {
      add(name, parent, .file(view))
    }

    private mutating func add(_ name: String, _ parent: UInt64, _ kind: TreeEntry.Kind) -> UInt64 {
      let path = (paths[parent] ?? []) + [name]
      entries.append(TreeEntry(path: path, kind: kind))
      let inode = next
      next += 1
      paths[inode] = path
      return inode
    }
  }

  // MARK: Refreshing from the source

  /// Rebuilds the inode table when the source's version changed.
  func refresh() {
    let version = source.version()
    guard state.withLock({ $0.version }) != version else { return }
    let entries = source.entries()
    state.withLock { s in
      guard s.version != version else { return }
      var nodes: [UInt64: VirtualNode] = [
        Self.rootInode: VirtualNode(
          inode: Self.rootInode, name: "/", parent: Self.rootInode, kind: .directory, isVolatile: false)
      ]
      var children: [UInt64: [UInt64]] = [:]
      var byPath: [[String]: UInt64] = [[]: Self.rootInode]
      for entry in entries {
        guard let name = entry.path.last, Self.isValidName(name),
          let parent = byPath[Array(entry.path.dropLast())], nodes[parent]?.isDirectory == true,
          byPath[entry.path] == nil
        else {
          logger.debug("skipping tree entry \(entry.path.joined(separator: "/"))")
          continue
        }
        let inode: UInt64
        if let known = s.inodeByKey[entry.key] {
          inode = known
        } else {
          inode = s.nextInode
          s.nextInode += 1
          s.inodeByKey[entry.key] = inode
        }
        let kind: VirtualNode.Kind =
          switch entry.kind {
          case .directory: .directory
          case .file(let view): .file(view)
          }
        nodes[inode] = VirtualNode(
          inode: inode, name: name, parent: parent, kind: kind, isVolatile: entry.isVolatile)
        children[parent, default: []].append(inode)
        byPath[entry.path] = inode
      }
      s.nodes = nodes
      s.children = children
      s.version = version
    }
  }

  static func isValidName(_ name: String) -> Bool {
    !name.isEmpty && name != "." && name != ".." && !name.contains("/") && !name.contains("\0")
      && name.utf8.count <= 255
  }

  // MARK: Queries

  public var nodeCount: Int { state.withLock { $0.nodes.count } }

  /// All file views (for statfs and flushing).
  public var views: [DiskView] {
    state.withLock { s in
      s.nodes.values.compactMap {
        if case .file(let view) = $0.kind { return view }
        return nil
      }
    }
  }

  /// The node with `inode`, or ENOENT (also for nodes gone since the last refresh).
  public func node(_ inode: UInt64) throws -> VirtualNode {
    guard let node = state.withLock({ $0.nodes[inode] }) else { throw FileSystemError(ENOENT) }
    return node
  }

  public func lookup(parent: UInt64, name: String) throws -> VirtualNode {
    refresh()
    let directory = try node(parent)
    guard directory.isDirectory else { throw FileSystemError(ENOTDIR) }
    switch name {
    case ".": return directory
    case "..": return try node(directory.parent)
    default:
      let found = state.withLock { s in
        (s.children[parent] ?? []).first { s.nodes[$0]?.name == name }
      }
      guard let found else { throw FileSystemError(ENOENT) }
      return try node(found)
    }
  }

  public func attributes(of inode: UInt64) throws -> NodeAttributes {
    let n = try node(inode)
    let time = NodeTime(seconds: metadata.seconds, nanoseconds: metadata.nanoseconds)
    var a = NodeAttributes(
      inode: inode, isDirectory: true, permissions: 0o555, linkCount: 2, size: 4096, blocks: 0,
      uid: metadata.uid, gid: metadata.gid, accessed: time, modified: time, changed: time)
    switch n.kind {
    case .directory:
      let subdirectories = state.withLock { s in
        (s.children[inode] ?? []).filter { s.nodes[$0]?.isDirectory == true }.count
      }
      a.linkCount = 2 + UInt32(subdirectories)
    case .file(let view):
      a.isDirectory = false
      a.linkCount = 1
      a.permissions = view.writable ? 0o644 : 0o444
      // Both counters only grow: their sum changes when either does. `generation()` also takes
      // in a passed-through file's growth (the kernel writes it itself), so it comes before
      // the size.
      let generation = writeGeneration.load(ordering: .acquiring) &+ (view.hostChanges?.generation() ?? 0)
      a.size = view.content.size
      a.blocks =
        (view.allocation.value(for: view.content, generation: generation, logger: logger) + 511) / 512
    }
    if let o = state.withLock({ $0.overrides[inode] }) { o.apply(to: &a) }
    return a
  }

  /// `.`, `..` and the children of directory `inode`, in a stable order.
  public func entries(of inode: UInt64) throws -> [DirectoryEntry] {
    refresh()
    let directory = try node(inode)
    guard directory.isDirectory else { throw FileSystemError(ENOTDIR) }
    return state.withLock { s in
      var list = [
        DirectoryEntry(name: ".", inode: inode, isDirectory: true),
        DirectoryEntry(name: "..", inode: directory.parent, isDirectory: true),
      ]
      for child in s.children[inode] ?? [] {
        guard let c = s.nodes[child] else { continue }
        list.append(DirectoryEntry(name: c.name, inode: c.inode, isDirectory: c.isDirectory))
      }
      return list
    }
  }

  /// Checks that file `inode` may be opened with `flags` (open(2) flags); returns its view.
  /// Directories fail with EISDIR; writing or truncating a view that cannot be written, EROFS.
  public func open(_ inode: UInt64, flags: Int32) throws -> DiskView {
    let view = try fileView(inode)
    let wantsWrite = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0
    if wantsWrite && !view.writable { throw FileSystemError(EROFS) }
    return view
  }

  /// Checks that directory `inode` may be opened.
  public func openDirectory(_ inode: UInt64) throws {
    guard try node(inode).isDirectory else { throw FileSystemError(ENOTDIR) }
  }

  /// Reads file `inode` at `offset` into `buffer`, clamped to the file size; returns the bytes
  /// read (short at end of file, 0 at or past it).
  public func read(_ inode: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
    -> Int
  {
    // `ByteView.read` clamps to the view's size itself (the FUSE read handler relies on that).
    try fileView(inode).content.read(into: buffer, at: offset)
  }

  public enum SeekKind: Sendable { case data, hole }

  /// SEEK_DATA / SEEK_HOLE on file `inode`; ENXIO when there is no such offset.
  public func seek(_ inode: UInt64, from offset: UInt64, to kind: SeekKind) throws -> UInt64 {
    let content = try fileView(inode).content
    let answer =
      switch kind {
      case .data: try content.seekData(from: offset)
      case .hole: try content.seekHole(from: offset)
      }
    guard let answer else { throw FileSystemError(ENXIO) }
    return answer
  }

  /// Any write to file `inode` (data or size): EROFS unless its view is writable.
  @discardableResult
  public func checkWritable(_ inode: UInt64) throws -> DiskView {
    guard case .file(let view) = try node(inode).kind, view.writable else { throw FileSystemError(EROFS) }
    return view
  }

  func fileView(_ inode: UInt64) throws -> DiskView {
    switch try node(inode).kind {
    case .directory: throw FileSystemError(EISDIR)
    case .file(let view): return view
    }
  }
}
