import VDiskCore

/// `rbd:POOL[/NAMESPACE]/IMAGE[@SNAP]`, parsed and checked: a non-empty pool, namespace (when
/// given) and image, one or two '/', at most one '@' (after the image, naming a non-empty
/// snapshot), no NUL (the names go to C).
struct RBDLocation: Equatable, Sendable {
  static let prefix = "rbd:"

  var pool: String
  /// An RBD namespace inside the pool (`rbd namespace create`); nil: the pool's default one.
  var namespace: String?
  var image: String
  var snapshot: String?

  init(_ location: String) throws(VDiskError) {
    guard location.hasPrefix(Self.prefix) else {
      throw VDiskError(
        .invalidArgument, path: location, "is not an RBD location (rbd:POOL[/NAMESPACE]/IMAGE[@SNAP])")
    }
    let rest = location.dropFirst(Self.prefix.count)
    func malformed(_ why: String) -> VDiskError {
      VDiskError(.invalidArgument, path: location, "\(why): expected rbd:POOL[/NAMESPACE]/IMAGE[@SNAP]")
    }
    guard !rest.utf8.contains(0) else { throw malformed("contains a NUL byte") }
    let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 2 || parts.count == 3 else {
      throw malformed(parts.count < 2 ? "names no pool" : "has more than two '/'")
    }
    guard !parts[0].isEmpty else { throw malformed("names no pool") }
    guard !parts[0].contains("@") else { throw malformed("has '@' in the pool name") }
    if parts.count == 3 {
      guard !parts[1].isEmpty else { throw malformed("names an empty namespace") }
      guard !parts[1].contains("@") else { throw malformed("has '@' in the namespace") }
    }
    let imageAndSnapshot = parts[parts.count - 1].split(separator: "@", omittingEmptySubsequences: false)
    guard imageAndSnapshot.count <= 2 else { throw malformed("has more than one '@'") }
    guard !imageAndSnapshot[0].isEmpty else { throw malformed("names no image") }
    if imageAndSnapshot.count == 2 && imageAndSnapshot[1].isEmpty {
      throw malformed("names no snapshot after '@'")
    }
    pool = String(parts[0])
    namespace = parts.count == 3 ? String(parts[1]) : nil
    image = String(imageAndSnapshot[0])
    snapshot = imageAndSnapshot.count == 2 ? String(imageAndSnapshot[1]) : nil
  }

  /// `pool` or `pool/namespace`, for messages.
  var poolAndNamespace: String { namespace.map { "\(pool)/\($0)" } ?? pool }
}
