/// One entry of the tree as a source describes it: a directory or a file, by path.
public struct TreeEntry: Sendable {
  public enum Kind: Sendable {
    case directory
    case file(DiskView)
  }

  /// Path components from the root (`["snapshots", "s1", "disk.raw"]`); never `.`/`..`/empty.
  public var path: [String]
  /// Stable identity: the same key keeps its inode across refreshes; a changed key (a snapshot
  /// deleted and re-created under the same name) gets a new inode, so no stale page cache.
  public var key: String
  public var kind: Kind
  /// Whether this entry can change while mounted (the kernel is told to cache it briefly).
  public var isVolatile: Bool

  public init(path: [String], key: String? = nil, kind: Kind, isVolatile: Bool = false) {
    self.path = path
    self.key = key ?? path.joined(separator: "/")
    self.kind = kind
    self.isVolatile = isVolatile
  }
}

/// What the mounted tree holds now. `VirtualTree` asks for `version()` on directory lookups and
/// listings, and rebuilds its inodes from `entries()` only when the version changed.
public protocol TreeSource: Sendable {
  /// Changes whenever the entries may have changed; cheap (called on every lookup).
  func version() -> UInt64
  /// Every entry, parents before children.
  func entries() -> [TreeEntry]
  /// Bytes `range` of `view` were written, zeroed or resized (e.g. a partition table changed).
  func didModify(_ view: DiskView, range: Range<UInt64>)
}

/// A tree fixed at construction (tests, and any mount without dynamic parts).
public final class StaticTreeSource: TreeSource {
  private let list: [TreeEntry]

  public init(_ entries: [TreeEntry]) { list = entries }

  public func version() -> UInt64 { 0 }
  public func entries() -> [TreeEntry] { list }
  public func didModify(_ view: DiskView, range: Range<UInt64>) {}
}
