import CFuse
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

// Names and attributes: lookup, getattr, setattr.

func fuseLookup(_ req: FUSERequest, _ ctx: FUSEContext, _ parent: UInt64, _ name: String) {
  handle(req, ctx) {
    let node = try ctx.tree.lookup(parent: parent, name: name)
    var entry = fuse_entry_out()
    entry.nodeid = node.inode
    entry.generation = 1
    let timeout = kernelTimeout(ctx.timeout(for: node))
    (entry.entry_valid, entry.entry_valid_nsec) = timeout
    (entry.attr_valid, entry.attr_valid_nsec) = timeout
    entry.attr = kernelAttributes(try ctx.tree.attributes(of: node.inode))
    req.reply(entry)
  }
}

func fuseGetattr(_ req: FUSERequest, _ ctx: FUSEContext, _ ino: UInt64) {
  handle(req, ctx) {
    let attributes = try ctx.tree.attributes(of: ino)
    req.reply(attributeReply(attributes, timeout: ctx.timeout(for: try ctx.tree.node(ino))))
  }
}

/// truncate (the size of a writable file), chmod, chown and utimens: all applied
/// (`VirtualTree.setAttributes`), none answered without being done. Who may change what the
/// kernel checks first (`default_permissions`). A size change is answered once the pages of
/// other files that show the changed bytes are dropped.
func fuseSetattr(_ req: FUSERequest, _ ctx: FUSEContext, _ ino: UInt64, _ attr: fuse_setattr_in) {
  handle(req, ctx) {
    let change = try attributeChange(attr)
    guard change.size != nil else {
      req.reply(attributeReply(try ctx.tree.setAttributes(ino, change), timeout: ctx.attributeTimeout))
      return
    }
    let view = try ctx.tree.checkWritable(ino)
    let old = view.content.size
    let attributes = try ctx.tree.setAttributes(ino, change)
    let new = attributes.size
    let timeout = ctx.attributeTimeout
    // The kernel drops this inode's pages past the new size itself.
    ctx.changed(view, min(old, new)..<max(old, new), through: ino, kernelKeepsOwnPages: true) {
      req.reply(attributeReply(attributes, timeout: timeout))
    }
  }
}

/// The change `setattr` asks for: the fields of `attr` that its `valid` bits (FATTR_*) name.
func attributeChange(_ attr: fuse_setattr_in) throws -> AttributeChange {
  let toSet = attr.valid
  func time(_ set: Int32, _ now: Int32, _ seconds: UInt64, _ nanoseconds: UInt32) -> AttributeChange.Time? {
    if toSet & UInt32(now) != 0 { return .now }
    if toSet & UInt32(set) != 0 {
      return .at(NodeTime(seconds: Int(Int64(bitPattern: seconds)), nanoseconds: Int(nanoseconds)))
    }
    return nil
  }
  var change = AttributeChange()
  if toSet & UInt32(FATTR_SIZE) != 0 {
    guard attr.size <= UInt64(Int64.max) else { throw FileSystemError(EINVAL) }
    change.size = attr.size
  }
  if toSet & UInt32(FATTR_MODE) != 0 { change.permissions = attr.mode & 0o7777 }
  if toSet & UInt32(FATTR_UID) != 0 { change.uid = attr.uid }
  if toSet & UInt32(FATTR_GID) != 0 { change.gid = attr.gid }
  change.accessTime = time(FATTR_ATIME, FATTR_ATIME_NOW, attr.atime, attr.atimensec)
  change.modificationTime = time(FATTR_MTIME, FATTR_MTIME_NOW, attr.mtime, attr.mtimensec)
  change.changeTime = time(FATTR_CTIME, 0, attr.ctime, attr.ctimensec)
  return change
}
