/// A time as `stat` shows it: seconds and nanoseconds since the epoch.
public struct NodeTime: Sendable, Equatable {
  public var seconds: Int
  public var nanoseconds: Int

  public init(seconds: Int, nanoseconds: Int) {
    self.seconds = seconds
    self.nanoseconds = nanoseconds
  }

  /// The wall clock now (CLOCK_REALTIME, as the kernel stamps files).
  public static var now: NodeTime { SystemCalls.wallClock() }
}

/// What a `setattr` asks to change; nil fields stay as they are.
public struct AttributeChange: Sendable, Equatable {
  public enum Time: Sendable, Equatable {
    /// `UTIME_NOW`: the daemon's clock.
    case now
    case at(NodeTime)
  }

  /// truncate(2): the file's new size (writable files only).
  public var size: UInt64?
  /// chmod(2): the permission bits (`0o7777` of the mode).
  public var permissions: UInt32?
  /// chown(2).
  public var uid: UInt32?
  public var gid: UInt32?
  /// utimensat(2).
  public var accessTime: Time?
  public var modificationTime: Time?
  /// An explicit status change time (the kernel sends one with some changes).
  public var changeTime: Time?

  public init(
    size: UInt64? = nil, permissions: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil,
    accessTime: Time? = nil, modificationTime: Time? = nil, changeTime: Time? = nil
  ) {
    self.size = size
    self.permissions = permissions
    self.uid = uid
    self.gid = gid
    self.accessTime = accessTime
    self.modificationTime = modificationTime
    self.changeTime = changeTime
  }

  /// Whether anything but the size changes.
  var changesMetadata: Bool {
    permissions != nil || uid != nil || gid != nil || accessTime != nil || modificationTime != nil
      || changeTime != nil
  }
}

/// Mode, owner and times set on one node, shown instead of the defaults (kept in memory for the
/// mount's lifetime: the image has no place for them).
struct NodeOverride: Sendable {
  var permissions: UInt32?
  var uid: UInt32?
  var gid: UInt32?
  var accessed: NodeTime?
  var modified: NodeTime?
  var changed: NodeTime?

  func apply(to a: inout NodeAttributes) {
    if let permissions { a.permissions = permissions }
    if let uid { a.uid = uid }
    if let gid { a.gid = gid }
    if let accessed { a.accessed = accessed }
    if let modified { a.modified = modified }
    if let changed { a.changed = changed }
  }
}

extension VirtualTree {
  /// `setattr` of node `inode`: resizes first (see `resize(_:to:)`; nothing else changes when that
  /// fails), then records mode, owner and times, which `attributes(of:)` shows from then on.
  /// Changing metadata sets the status change time (POSIX chmod, chown, utimensat). Who may
  /// change what is the kernel's check (`default_permissions`: chmod and utimes by the owner,
  /// chown by root). Data writes leave the times alone (a changed mtime would make the kernel
  /// drop every cached page of the file on its next attribute refresh). Returns the attributes.
  @discardableResult
  public func setAttributes(_ inode: UInt64, _ change: AttributeChange, now: NodeTime = .now) throws
    -> NodeAttributes
  {
    _ = try node(inode)
    if let size = change.size { try resize(inode, to: size) }
    if change.changesMetadata {
      func resolve(_ time: AttributeChange.Time?) -> NodeTime? {
        switch time {
        case nil: nil
        case .now: now
        case .at(let t): t
        }
      }
      state.withLock { s in
        var o = s.overrides[inode] ?? NodeOverride()
        if let p = change.permissions { o.permissions = p & 0o7777 }
        if let uid = change.uid { o.uid = uid }
        if let gid = change.gid { o.gid = gid }
        if let t = resolve(change.accessTime) { o.accessed = t }
        if let t = resolve(change.modificationTime) { o.modified = t }
        o.changed = resolve(change.changeTime) ?? now
        s.overrides[inode] = o
      }
    }
    return try attributes(of: inode)
  }
}
