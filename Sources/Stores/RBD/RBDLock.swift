import CRBD
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

extension RBDObject {
  /// librbd's RBD_FEATURE_EXCLUSIVE_LOCK (rbd/features.h).
  static let exclusiveLockFeature: UInt64 = 1 << 2

  /// Takes the image's exclusive lock for this client, or throws `.locked` when a live client
  /// holds it. librbd alone would *ask* the holder to release, and a holder with the automatic
  /// policy (QEMU, rbd-nbd, another plain librbd writer) would hand it over mid-write; so a held
  /// lock whose owner still watches the image is refused here first. A lock whose owner is gone
  /// (no other watcher: a crashed client) is broken by `rbd_lock_acquire` itself. Holders that
  /// took the lock through this API (another vdiskfs) refuse requests: EROFS, also `.locked`.
  static func takeExclusiveLock(_ connection: RBDConnection, _ image: rbd_image_t, location: String)
    throws(VDiskError)
  {
    var features: UInt64 = 0
    let got = rbd_get_features(image, &features)
    guard got == 0 else {
      throw VDiskError(.io, path: location, "cannot read the image features: \(rbdMessage(got))")
    }
    guard features & exclusiveLockFeature != 0 else {
      throw VDiskError(
        .readOnly, path: location,
        "has no exclusive-lock feature, so writers cannot be kept apart; opened read-only "
          + "(rbd feature enable POOL/IMAGE exclusive-lock)")
    }
    if let owner = try lockOwner(image, location: location) {
      let others = crbd_other_watchers(image, connection.instanceID)
      guard others >= 0 else {
        throw VDiskError(.io, path: location, "cannot list the image's watchers: \(rbdMessage(others))")
      }
      if others > 0 { throw heldElsewhere(owner, location: location) }
    }
    let acquired = rbd_lock_acquire(image, RBD_LOCK_MODE_EXCLUSIVE)
    switch -acquired {
    case 0: break
    case EROFS, EBUSY, EAGAIN:
      throw heldElsewhere(try lockOwner(image, location: location) ?? "unknown", location: location)
    default:
      throw VDiskError(
        .io, path: location, "cannot take the exclusive lock: \(rbdMessage(acquired))", errno: EIO)
    }
    connection.holdsLock = true
    var owner: Int32 = 0
    let checked = rbd_is_exclusive_lock_owner(image, &owner)
    guard checked == 0, owner == 1 else {
      throw VDiskError(
        .locked, path: location, "the exclusive lock was taken but is not held (another client?)")
    }
  }

  /// The name of the exclusive lock's holder (`client.N`), nil when nobody holds it.
  private static func lockOwner(_ image: rbd_image_t, location: String) throws(VDiskError) -> String? {
    var name = [CChar](repeating: 0, count: 128)
    let count = crbd_lock_owner(image, &name, name.count)
    guard count >= 0 else {
      throw VDiskError(.io, path: location, "cannot read the exclusive lock's owner: \(rbdMessage(count))")
    }
    guard count > 0 else { return nil }
    let owner = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return owner.isEmpty ? "unknown" : owner
  }

  private static func heldElsewhere(_ owner: String, location: String) -> VDiskError {
    VDiskError(
      .locked, path: location,
      "the image's exclusive lock is held by another client (\(owner)); refusing to open it read-write")
  }

  /// The image's id (format 2), or its object name prefix (format 1 images have no id).
  static func imageID(_ image: rbd_image_t, location: String) throws(VDiskError) -> String {
    var buffer = [CChar](repeating: 0, count: 128)
    var status = rbd_get_id(image, &buffer, buffer.count)
    if status == -EINVAL { status = rbd_get_block_name_prefix(image, &buffer, buffer.count) }
    guard status == 0 else {
      throw VDiskError(.io, path: location, "cannot read the image id: \(rbdMessage(status))")
    }
    let id = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard !id.isEmpty else { throw VDiskError(.io, path: location, "librbd gave an empty image id") }
    return id
  }
}
