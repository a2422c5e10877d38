import CBuildInfo

/// What `vdiskfs --version` prints: the package version and the git commit of the build.
enum BuildInfo {
  /// The package version; the Makefile reads it from here for `make deb` (keep the quotes).
  static let packageVersion = "0.1.0"

  /// The commit the Makefile stamped (`git describe --always --dirty --abbrev=12`), or nil for a
  /// plain `swift build`.
  static var gitCommit: String? {
    let commit = String(cString: cbuild_git_commit)
    return commit.isEmpty ? nil : commit
  }

  /// `0.1.0 (git 5426f8c1a2b3)`, or `0.1.0 (git commit unknown: built without make)`.
  static var versionText: String {
    "\(packageVersion) (git \(gitCommit ?? "commit unknown: built without make"))"
  }
}
