import RemoteStore
import VDiskCore

/// Ceph RBD images: `rbd:POOL/IMAGE[@SNAP]` through librbd. The cluster comes from
/// `-o ceph_conf=` (else `CEPH_CONF`, else librados' default search) and the client id from
/// `-o ceph_id=`. A snapshot is read-only; an image head opened read-write takes the image's
/// exclusive lock. Backing names resolve in the same pool (the default resolution).
public struct RBDStore: RemoteStoreKind {
  public static let prefixes = [RBDLocation.prefix]

  public static func open(_ location: String, writable: Bool, options: RemoteOptions) throws
    -> any RemoteObject
  {
    try RBDObject(RBDLocation(location), location: location, writable: writable, options: options)
  }
}
