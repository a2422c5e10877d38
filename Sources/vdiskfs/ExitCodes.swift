import VDiskCore

/// Exit codes of `vdiskfs`, documented in `--help` and the README. Stable: scripts may test them.
enum ExitCodes {
  static let success: Int32 = 0
  /// An I/O error or any failure not listed below.
  static let failure: Int32 = 1
  /// Bad command line or mount options.
  static let usage: Int32 = 2
  /// The image, a backing file or an external data file does not exist.
  static let notFound: Int32 = 3
  /// The image (or one in its chain) is corrupt.
  static let corrupt: Int32 = 4
  /// The image uses a format or feature vdiskfs does not support (encryption, unknown feature bits).
  static let unsupported: Int32 = 5
  /// The mountpoint cannot be used (missing, not a directory, already a mount point).
  static let mountpoint: Int32 = 6
  /// The FUSE mount itself failed (no /dev/fuse, no permission).
  static let fuse: Int32 = 7
  /// Another process (QEMU) holds the image: its locks conflict with this mount.
  static let locked: Int32 = 8

  static let helpText =
    "Exit codes: 0 success, 1 I/O or other failure, 2 bad command line or option, 3 image or backing "
    + "file not found, 4 image corrupt, 5 unsupported format or feature, 6 mountpoint unusable, "
    + "7 FUSE mount failed, 8 image in use by another process (locked)."

  static func code(for error: VDiskError) -> Int32 {
    switch error.kind {
    case .notFound: notFound
    case .corrupt: corrupt
    case .unsupported: unsupported
    case .invalidArgument: usage
    case .locked: locked
    case .io, .noSpace, .readOnly, .notPermitted: failure
    }
  }
}
