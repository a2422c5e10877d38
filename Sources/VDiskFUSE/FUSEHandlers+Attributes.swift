import CFuse
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

// Names and attributes: lookup, getattr, setattr.

func fuseLookup(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
  handle(req) { ctx in
    guard let name else { throw FileSystemError(EINVAL) }
    let node = try ctx.tree.lookup(parent: parent, name: String(cString: name))
    var entry = fuse_entry_param()
    entry.ino = fuse_ino_t(node.inode)
    entry.generation = 1
    entry.attr = statBuffer(try ctx.tree.attributes(of: node.inode))
    entry.attr_timeout = ctx.timeout(for: node)
    entry.entry_timeout = ctx.timeout(for: node)
    fuse_reply_entry(req, &entry)
  }
}

func fuseGetattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
  handle(req) { ctx in
    var st = statBuffer(try ctx.tree.attributes(of: ino))
    fuse_reply_attr(req, &st, ctx.timeout(for: try ctx.tree.node(ino)))
  }
}

/// truncate (the size of a writable file), chmod, chown and utimens: all applied
/// (`VirtualTree.setAttributes`), none answered without being done. Who may change what the
/// kernel checks first (`default_permissions`). A size change is answered once the pages of
/// other files that show the changed bytes are dropped.
func fuseSetattr(
  _ req: fuse_req_t?, _ ino: fuse_ino_t, _ attr: UnsafeMutablePointer<stat>?, _ toSet: Int32,
  _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
  handle(req) { ctx in
    guard let attr else { throw FileSystemError(EINVAL) }
    let change = try attributeChange(attr.pointee, toSet)
    guard change.size != nil else {
      var st = statBuffer(try ctx.tree.setAttributes(ino, change))
      fuse_reply_attr(req, &st, ctx.attributeTimeout)
      return
    }
    let view = try ctx.tree.checkWritable(ino)
    let old = view.content.size
    let attributes = try ctx.tree.setAttributes(ino, change)
    let new = attributes.size
    let pending = PendingRequest(req)
    let timeout = ctx.attributeTimeout
    // The kernel drops this inode's pages past the new size itself.
    ctx.changed(view, min(old, new)..<max(old, new), through: ino, kernelKeepsOwnPages: true) {
      var st = statBuffer(attributes)
      fuse_reply_attr(pending.req, &st, timeout)
    }
  }
}

/// The change `setattr` asks for: the fields of `attr` that `toSet` (FUSE_SET_ATTR_*) names.
func attributeChange(_ attr: stat, _ toSet: Int32) throws -> AttributeChange {
  func time(_ set: Int32, _ now: Int32, _ value: timespec) -> AttributeChange.Time? {
    if toSet & now != 0 { return .now }
    if toSet & set != 0 { return .at(NodeTime(seconds: value.tv_sec, nanoseconds: value.tv_nsec)) }
    return nil
  }
  var change = AttributeChange()
  if toSet & FUSE_SET_ATTR_SIZE != 0 {
    guard attr.st_size >= 0 else { throw FileSystemError(EINVAL) }
    change.size = UInt64(attr.st_size)
  }
  if toSet & FUSE_SET_ATTR_MODE != 0 { change.permissions = UInt32(attr.st_mode) & 0o7777 }
  if toSet & FUSE_SET_ATTR_UID != 0 { change.uid = UInt32(attr.st_uid) }
  if toSet & FUSE_SET_ATTR_GID != 0 { change.gid = UInt32(attr.st_gid) }
  change.accessTime = time(FUSE_SET_ATTR_ATIME, FUSE_SET_ATTR_ATIME_NOW, attr.st_atim)
  change.modificationTime = time(FUSE_SET_ATTR_MTIME, FUSE_SET_ATTR_MTIME_NOW, attr.st_mtim)
  change.changeTime = time(FUSE_SET_ATTR_CTIME, 0, attr.st_ctim)
  return change
}
