import Logging
import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// One guest disk as a file of the tree: a layer chain and whether it may be written.
public struct DiskView: Sendable {
  public let chain: LayerChain
  public let writable: Bool
  /// `-o allow_shrink`: truncating disk.raw smaller shrinks the virtual disk.
  public let allowShrink: Bool
  /// `st_blocks` source, computed on first use and kept until a write changes the view.
  let allocation: AllocationCache

  public init(chain: LayerChain, writable: Bool, allowShrink: Bool = false) {
    self.chain = chain
    self.writable = writable
    self.allowShrink = allowShrink
    self.allocation = AllocationCache()
  }
}

/// Bytes held as data by a chain, computed on first use, forgotten when the view is written.
final class AllocationCache: Sendable {
  private let bytes = Mutex<UInt64?>(nil)

  /// Forgets the cached value after the view changed (recomputed on the next stat).
  func invalidate() { bytes.withLock { $0 = nil } }

  /// The chain's allocated bytes; a failure is logged once and reported (and kept) as 0.
  func value(for chain: LayerChain, logger: Logger) -> UInt64 {
    bytes.withLock { cached in
      if let cached { return cached }
      let computed: UInt64
      do {
        computed = try chain.allocatedBytes()
      } catch {
        logger.warning("cannot compute allocated size, reporting 0 blocks: \(error)")
        computed = 0
      }
      cached = computed
      return computed
    }
  }
}

/// A node of the virtual tree. Inodes are assigned in creation order from 1 (the root); a
/// node's name is unique among its siblings.
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
  /// Modification (and access, change) time, seconds and nanoseconds since the epoch.
  public var seconds: Int
  public var nanoseconds: Int
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

/// The inode model of the mounted file system: `/`, `/disk.raw` and (in later issues)
/// `partitions/`, `snapshots/<name>/`, `layers/<n>-<name>/` directories of views. Pure Swift;
/// the FUSE callbacks translate its answers. Built once with `Builder` and then immutable, so
/// every query is lock-free.
public final class VirtualTree: Sendable {
  public static let rootInode: UInt64 = 1

  /// Collects nodes before the tree is frozen.
  public struct Builder {
    fileprivate var nodes: [VirtualNode]
    fileprivate var children: [UInt64: [UInt64]] = [:]

    public init() {
      nodes = [
        VirtualNode(inode: VirtualTree.rootInode, name: "/", parent: VirtualTree.rootInode, kind: .directory)
      ]
    }

    /// Adds a directory named `name` in directory `parent`; returns its inode.
    @discardableResult
    public mutating func addDirectory(named name: String, in parent: UInt64 = VirtualTree.rootInode) -> UInt64
    {
      add(name: name, parent: parent, kind: .directory)
    }

    /// Adds a file showing `view` named `name` in directory `parent`; returns its inode.
    @discardableResult
    public mutating func addFile(
      named name: String, view: DiskView, in parent: UInt64 = VirtualTree.rootInode
    ) -> UInt64 {
      add(name: name, parent: parent, kind: .file(view))
    }

    private mutating func add(name: String, parent: UInt64, kind: VirtualNode.Kind) -> UInt64 {
      precondition(
        !name.isEmpty && !name.contains("/") && name != "." && name != "..", "bad node name \(name)")
      let parentIndex = Int(parent) - 1
      precondition(
        nodes.indices.contains(parentIndex) && nodes[parentIndex].isDirectory, "parent is no directory")
      precondition(
        !(children[parent] ?? []).contains { nodes[Int($0) - 1].name == name }, "duplicate name \(name)")
      let inode = UInt64(nodes.count + 1)
      nodes.append(VirtualNode(inode: inode, name: name, parent: parent, kind: kind))
      children[parent, default: []].append(inode)
      return inode
    }
  }

  /// Nodes by inode - 1.
  private let nodes: [VirtualNode]
  private let children: [UInt64: [UInt64]]
  public let metadata: NodeMetadata
  private let logger: Logger

  public init(_ builder: Builder, metadata: NodeMetadata = NodeMetadata(), logger: Logger) {
    self.nodes = builder.nodes
    self.children = builder.children
    self.metadata = metadata
    self.logger = logger
  }

  /// The tree of this foundation: `/` (inode 1) holding `disk.raw` (inode 2), the whole chain.
  public convenience init(
    chain: LayerChain, writable: Bool, allowShrink: Bool = false, metadata: NodeMetadata = NodeMetadata(),
    logger: Logger
  ) {
    var builder = Builder()
    builder.addFile(
      named: "disk.raw", view: DiskView(chain: chain, writable: writable, allowShrink: allowShrink))
    self.init(builder, metadata: metadata, logger: logger)
  }

  /// Whether writes reach the chain (views marked writable whose top layer can be written).
  static let writesImplemented = true

  public var nodeCount: Int { nodes.count }

  /// All file views (for statfs).
  public var views: [DiskView] {
    nodes.compactMap {
      if case .file(let view) = $0.kind { return view }
      return nil
    }
  }

  /// The node with `inode`, or ENOENT.
  public func node(_ inode: UInt64) throws -> VirtualNode {
    guard inode >= 1, inode <= UInt64(nodes.count) else { throw FileSystemError(ENOENT) }
    return nodes[Int(inode) - 1]
  }

  public func lookup(parent: UInt64, name: String) throws -> VirtualNode {
    let directory = try node(parent)
    guard directory.isDirectory else { throw FileSystemError(ENOTDIR) }
    switch name {
    case ".": return directory
    case "..": return try node(directory.parent)
    default:
      guard let inode = children[parent]?.first(where: { nodes[Int($0) - 1].name == name }) else {
        throw FileSystemError(ENOENT)
      }
      return try node(inode)
    }
  }

  public func attributes(of inode: UInt64) throws -> NodeAttributes {
    let n = try node(inode)
    var a = NodeAttributes(
      inode: inode, isDirectory: true, permissions: 0o555, linkCount: 2, size: 0, blocks: 0,
      uid: metadata.uid, gid: metadata.gid, seconds: metadata.seconds, nanoseconds: metadata.nanoseconds)
    switch n.kind {
    case .directory:
      let subdirectories = (children[inode] ?? []).filter { nodes[Int($0) - 1].isDirectory }.count
      a.linkCount = 2 + UInt32(subdirectories)
      a.size = 4096
      a.blocks = 0
      a.permissions = 0o555
    case .file(let view):
      a.isDirectory = false
      a.linkCount = 1
      a.permissions = view.writable ? 0o644 : 0o444
      a.size = view.chain.virtualSize
      a.blocks = (view.allocation.value(for: view.chain, logger: logger) + 511) / 512
    }
    return a
  }

  /// `.`, `..` and the children of directory `inode`, in a stable order.
  public func entries(of inode: UInt64) throws -> [DirectoryEntry] {
    let directory = try node(inode)
    guard directory.isDirectory else { throw FileSystemError(ENOTDIR) }
    var list = [
      DirectoryEntry(name: ".", inode: inode, isDirectory: true),
      DirectoryEntry(name: "..", inode: directory.parent, isDirectory: true),
    ]
    for child in children[inode] ?? [] {
      let c = nodes[Int(child) - 1]
      list.append(DirectoryEntry(name: c.name, inode: c.inode, isDirectory: c.isDirectory))
    }
    return list
  }

  /// Checks that file `inode` may be opened with `flags` (open(2) flags); returns its view.
  /// Directories fail with EISDIR; writing or truncating a view that cannot be written, EROFS.
  public func open(_ inode: UInt64, flags: Int32) throws -> DiskView {
    let view = try fileView(inode)
    let wantsWrite = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0
    if wantsWrite && !(view.writable && Self.writesImplemented) { throw FileSystemError(EROFS) }
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
    let view = try fileView(inode)
    let size = view.chain.virtualSize
    guard offset < size, buffer.count > 0 else { return 0 }
    let count = Int(min(UInt64(buffer.count), size - offset))
    return try view.chain.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]), at: offset)
  }

  public enum SeekKind: Sendable { case data, hole }

  /// SEEK_DATA / SEEK_HOLE on file `inode`; ENXIO when there is no such offset.
  public func seek(_ inode: UInt64, from offset: UInt64, to kind: SeekKind) throws -> UInt64 {
    let chain = try fileView(inode).chain
    let answer =
      switch kind {
      case .data: try chain.seekData(from: offset)
      case .hole: try chain.seekHole(from: offset)
      }
    guard let answer else { throw FileSystemError(ENXIO) }
    return answer
  }

  /// Any write to file `inode` (data or size): EROFS unless its view is writable.
  @discardableResult
  public func checkWritable(_ inode: UInt64) throws -> DiskView {
    guard case .file(let view) = try node(inode).kind, view.writable && Self.writesImplemented else {
      throw FileSystemError(EROFS)
    }
    return view
  }

  /// Writes `data` to file `inode` at `offset`; past the end of the disk, ENOSPC (disk.raw has a
  /// fixed size until truncated larger). Returns the bytes written.
  public func write(_ inode: UInt64, _ data: UnsafeRawBufferPointer, at offset: UInt64) throws -> Int {
    let view = try checkWritable(inode)
    defer { view.allocation.invalidate() }
    return try view.chain.write(data, at: offset)
  }

  /// `fallocate` on file `inode`: PUNCH_HOLE (with KEEP_SIZE, as the kernel requires) and
  /// ZERO_RANGE make the range read as zeros; mode 0 within the file succeeds without doing
  /// anything (the disk's size is fixed; there is nothing to reserve that a write could not
  /// allocate); anything else (COLLAPSE, INSERT, growing the file) is EOPNOTSUPP.
  public func fallocate(_ inode: UInt64, mode: Int32, offset: UInt64, length: UInt64) throws {
    let view = try checkWritable(inode)
    let keepSize: Int32 = 0x01
    let punchHole: Int32 = 0x02
    let zeroRange: Int32 = 0x10
    let size = view.chain.virtualSize
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard !overflow else { throw FileSystemError(EINVAL) }
    switch mode & ~keepSize {
    case punchHole where mode & keepSize != 0:
      defer { view.allocation.invalidate() }
      try view.chain.discard(at: offset, length: length, mode: .punchHole)
    case zeroRange:
      guard end <= size || mode & keepSize != 0 else { throw FileSystemError(EOPNOTSUPP) }
      defer { view.allocation.invalidate() }
      try view.chain.discard(at: offset, length: length, mode: .zeroRange)
    case 0:
      guard end <= size || mode & keepSize != 0 else { throw FileSystemError(EOPNOTSUPP) }
    default:
      throw FileSystemError(EOPNOTSUPP)
    }
  }

  /// `fsync`, `fdatasync`, `flush` (close) on file `inode`: metadata written back in order and the
  /// image synced. Nothing to do for a read-only view.
  public func sync(_ inode: UInt64) throws {
    let view = try fileView(inode)
    guard view.writable else { return }
    try view.chain.flush()
  }

  /// `truncate` of file `inode` to `size`: grows the virtual disk; shrinking only with
  /// `allowShrink` (EINVAL otherwise).
  public func resize(_ inode: UInt64, to size: UInt64) throws {
    let view = try checkWritable(inode)
    guard size != view.chain.virtualSize else { return }
    defer { view.allocation.invalidate() }
    guard size > view.chain.virtualSize || view.allowShrink else { throw FileSystemError(EINVAL) }
    try view.chain.writableTop.resize(to: size, allowShrink: view.allowShrink)
  }

  /// Writes back every writable view (unmount, SIGTERM).
  public func syncAll() throws {
    for view in views where view.writable { try view.chain.flush() }
  }

  private func fileView(_ inode: UInt64) throws -> DiskView {
    switch try node(inode).kind {
    case .directory: throw FileSystemError(EISDIR)
    case .file(let view): return view
    }
  }
}
