import VDiskCore

/// A kind of remote store vdiskfs opens images from: S3, HTTP(S), Ceph RBD. One type per store, in
/// its own folder under Sources/Stores, listed once in `StoreRegistry` (ImageFormats).
public protocol RemoteStoreKind: Sendable {
  /// The location prefixes the store serves: `["s3://"]`, `["rbd:"]`, `["http://", "https://"]`.
  static var prefixes: [String] { get }

  /// Opens the object at `location` (which starts with one of `prefixes`), checking that it
  /// exists and reading its size and version. Throws `VDiskError`: `.notFound` for a missing
  /// bucket, key, pool or image; `.notPermitted` for refused credentials; `.invalidArgument` for
  /// a malformed location; `.io` for an unreachable endpoint (after the timeout);
  /// `.locked` when a read-write open finds another writer.
  static func open(_ location: String, writable: Bool, options: RemoteOptions) throws -> any RemoteObject

  /// `name`, as an image at `location` records a backing or extent file, resolved in the same
  /// store: relative names against the location's folder (`s3://b/vm/top.qcow2` + `base.qcow2`
  /// is `s3://b/vm/base.qcow2`). The default does that, and takes an absolute name from the
  /// store's root (`s3://b` + `/vm/base.qcow2`).
  static func resolve(_ name: String, relativeTo location: String) -> String

  /// Called just before the mount forks into the background. A store whose client runs threads
  /// of its own (librados) must let go of them here, so that its objects reconnect in the child
  /// on first use: threads do not survive `fork`. The default does nothing (curl needs nothing).
  static func prepareForFork()
}

extension RemoteStoreKind {
  public static func prepareForFork() {}

  public static func resolve(_ name: String, relativeTo location: String) -> String {
    RemoteLocation.resolve(name, relativeTo: location)
  }
}

public enum RemoteLocation {
  /// The default name resolution (see `RemoteStoreKind.resolve`).
  public static func resolve(_ name: String, relativeTo location: String) -> String {
    if name.hasPrefix("/") {
      // scheme://authority + /path
      if let authorityStart = authorityStart(of: location) {
        let rest = location[authorityStart...]
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        return String(location[..<authorityEnd]) + name
      }
      // rbd:pool/image: the last component, in the same pool
      let base = name.split(separator: "/").last.map(String.init) ?? name
      return resolve(base, relativeTo: location)
    }
    guard let slash = location.lastIndex(of: "/") else { return name }
    // scheme://host without a path: the name is at the root, not glued to the host.
    if let authorityStart = authorityStart(of: location), slash < authorityStart {
      return location + "/" + name
    }
    return String(location[...slash]) + name
  }

  /// `scheme://…` up to its first '?' or '#' (a URL without its query string and fragment);
  /// other text as it is.
  public static func withoutQuery(_ location: String) -> String {
    guard let start = authorityStart(of: location) else { return location }
    let end = location[start...].firstIndex { $0 == "?" || $0 == "#" } ?? location.endIndex
    return String(location[..<end])
  }

  /// Where the authority (host, bucket) of `scheme://authority/path` starts; nil without `://`.
  public static func authorityStart(of location: String) -> String.Index? {
    let chars = Array(location.utf8)
    guard chars.count >= 3 else { return nil }
    for i in 0..<(chars.count - 2) where chars[i] == UInt8(ascii: ":") {
      guard chars[i + 1] == UInt8(ascii: "/"), chars[i + 2] == UInt8(ascii: "/") else { return nil }
      return location.utf8.index(location.utf8.startIndex, offsetBy: i + 3)
    }
    return nil
  }
}
