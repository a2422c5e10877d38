import RemoteStore
import VDiskCore

/// Images served over HTTP(S): `https://host/path/disk.qcow2`. Read-only (the `writable` flag is
/// ignored: the object says `isWritable == false`). The server must serve byte ranges; TLS
/// certificates are verified unless `RemoteOptions.verifyTLS` is off.
public enum HTTPStore: RemoteStoreKind {
  public static let prefixes = ["http://", "https://"]

  public static func open(_ location: String, writable: Bool, options: RemoteOptions) throws
    -> any RemoteObject
  {
    try validate(location)
    return try HTTPOpening.open(
      location, endpoint: HTTPEndpoint(url: location), client: HTTPClient(options: options), head: true
    ) { HTTPOpening.judge(location, $0) }
  }

  /// A name an image at `location` records, resolved against the URL without its query string
  /// and fragment: a relative name replaces the last path segment (`https://h/vm/top.qcow2?X-Amz-
  /// Signature=…` + `base.qcow2` is `https://h/vm/base.qcow2`, unsigned: a presigned URL's
  /// signature is for its own object), an absolute one the whole path.
  public static func resolve(_ name: String, relativeTo location: String) -> String {
    RemoteLocation.resolve(name, relativeTo: RemoteLocation.withoutQuery(location))
  }

  /// Refuses a URL without a host, or with spaces or control characters (libcurl would send
  /// them as they are).
  static func validate(_ location: String) throws {
    guard prefixes.contains(where: { location.hasPrefix($0) }),
      !HTTPOpening.host(of: location).isEmpty,
      location.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F })
    else {
      throw VDiskError(.invalidArgument, path: location, "is not a valid http:// or https:// URL")
    }
  }
}
