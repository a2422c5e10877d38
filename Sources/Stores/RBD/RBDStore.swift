import RemoteStore
import Synchronization
import VDiskCore

/// Ceph RBD images: `rbd:POOL[/NAMESPACE]/IMAGE[@SNAP]` through librbd. The cluster comes from
/// `-o ceph_conf=` (else `CEPH_CONF`, else librados' default search) and the client id from
/// `-o ceph_id=`. A snapshot is read-only; an image head opened read-write takes the image's
/// exclusive lock. Backing names resolve in the same pool and namespace (`resolve`).
public struct RBDStore: RemoteStoreKind {
  public static let prefixes = [RBDLocation.prefix]

  /// A name an RBD image records, as an image in the same pool and namespace: RBD has no folders,
  /// so only the name's last component counts (`sub/base.qcow2` and `/var/lib/base.qcow2` are
  /// `base.qcow2` there); a name with a snapshot (`base@s1`) keeps it.
  public static func resolve(_ name: String, relativeTo location: String) -> String {
    let base = name.split(separator: "/").last.map(String.init) ?? name
    guard let slash = location.lastIndex(of: "/") else { return base }
    return String(location[...slash]) + base
  }

  public static func open(_ location: String, writable: Bool, options: RemoteOptions) throws
    -> any RemoteObject
  {
    try RBDObject(RBDLocation(location), location: location, writable: writable, options: options)
  }

  /// librados runs threads of its own, which do not survive the mount's fork: every open image
  /// lets go of its handles (and its exclusive lock) here and reconnects in the child on first use.
  public static func prepareForFork() {
    let objects = live.withLock { $0.values.compactMap(\.object) }
    for object in objects { object.release() }
  }

  /// Every open RBD object, for `prepareForFork`.
  static let live = Mutex<[ObjectIdentifier: WeakObject]>([:])
}

/// A weak reference to an open object (the registry must not keep objects alive).
struct WeakObject: @unchecked Sendable {
  // @unchecked: the reference is only read under `RBDStore.live`'s lock or after.
  weak var object: RBDObject?
  init(_ object: RBDObject) { self.object = object }
}
