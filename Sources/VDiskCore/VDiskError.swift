/// The one error type of vdiskfs: a stable kind, the file it concerns, where in that file, and a
/// sentence for a human. The FUSE adapter turns the kind into one errno; the CLI prints
/// `vdiskfs: <description>` and exits with the kind's exit code.
public struct VDiskError: Error, CustomStringConvertible, Sendable, Equatable {
  public enum Kind: String, Sendable, Equatable, CaseIterable {
    /// The image contradicts its format (bad offsets, counts, checksums): EIO.
    case corrupt
    /// A valid image uses something vdiskfs does not implement (encryption, unknown feature bits).
    case unsupported
    /// The operating system failed an I/O call.
    case io
    /// No space left to grow an image.
    case noSpace
    /// A write was attempted on something read-only.
    case readOnly
    /// A file named by the user or by an image does not exist.
    case notFound
    /// The caller asked for something that makes no sense (bad option, bad range).
    case invalidArgument
    /// Another process (QEMU) holds the image with permissions that conflict (image locking).
    case locked
    /// A safety rule for untrusted images refuses it (a write that would make a probed raw image
    /// probe as another format, a backing file outside `backing_dir`): EPERM.
    case notPermitted
  }

  public var kind: Kind
  /// The file the fault is in (as the user or the referring image named it, resolved).
  public var path: String
  /// Byte offset in `path` the fault concerns, when there is one.
  public var offset: UInt64?
  /// What went wrong, as a sentence without the path (`L2 table at 0x… lies beyond end of file`).
  public var detail: String
  /// The errno of a failed system call (`.io`, `.notFound`, `.noSpace`).
  public var errno: Int32?

  public init(_ kind: Kind, path: String, offset: UInt64? = nil, _ detail: String, errno: Int32? = nil) {
    self.kind = kind
    self.path = path
    self.offset = offset
    self.detail = detail
    self.errno = errno
  }

  public var description: String { "\(path): \(detail)" }

  public static func corrupt(_ path: String, at offset: UInt64? = nil, _ detail: String) -> VDiskError {
    VDiskError(.corrupt, path: path, offset: offset, detail)
  }

  public static func unsupported(_ path: String, _ detail: String) -> VDiskError {
    VDiskError(.unsupported, path: path, detail)
  }
}

/// Formats a byte offset or size the way error messages show it: `0x7f000000`.
@inline(__always)
public func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

@inline(__always)
public func hex(_ value: Int) -> String { "0x" + String(value, radix: 16) }
