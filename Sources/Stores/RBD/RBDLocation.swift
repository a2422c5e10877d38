import VDiskCore

/// `rbd:POOL/IMAGE[@SNAP]`, parsed and checked: a non-empty pool and image, exactly one '/',
/// at most one '@' (after the image, naming a non-empty snapshot), no NUL (the names go to C).
struct RBDLocation: Equatable, Sendable {
  static let prefix = "rbd:"

  var pool: String
  var image: String
  var snapshot: String?

  init(_ location: String) throws(VDiskError) {
    guard location.hasPrefix(Self.prefix) else {
      throw VDiskError(.invalidArgument, path: location, "is not an RBD location (rbd:POOL/IMAGE[@SNAP])")
    }
    let rest = location.dropFirst(Self.prefix.count)
    func malformed(_ why: String) -> VDiskError {
      VDiskError(.invalidArgument, path: location, "\(why): expected rbd:POOL/IMAGE[@SNAP]")
    }
    guard !rest.utf8.contains(0) else { throw malformed("contains a NUL byte") }
    let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 2 else {
      throw malformed(
        parts.count < 2 ? "names no pool" : "has more than one '/' (RBD namespaces are not supported)")
    }
    guard !parts[0].isEmpty else { throw malformed("names no pool") }
    guard !parts[0].contains("@") else { throw malformed("has '@' in the pool name") }
    let imageAndSnapshot = parts[1].split(separator: "@", omittingEmptySubsequences: false)
    guard imageAndSnapshot.count <= 2 else { throw malformed("has more than one '@'") }
    guard !imageAndSnapshot[0].isEmpty else { throw malformed("names no image") }
    if imageAndSnapshot.count == 2 && imageAndSnapshot[1].isEmpty {
      throw malformed("names no snapshot after '@'")
    }
    pool = String(parts[0])
    image = String(imageAndSnapshot[0])
    snapshot = imageAndSnapshot.count == 2 ? String(imageAndSnapshot[1]) : nil
  }
}
