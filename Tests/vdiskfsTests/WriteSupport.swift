import Foundation
import TestSupport
import Testing

/// `qemu-img check` of `image`: exit status and output.
func qemuCheck(_ image: String) throws -> CommandResult {
  try run("qemu-img", ["check", image], check: false)
}

/// Requires `qemu-img check` to find no errors and no leaks (exit 0).
func expectCleanCheck(_ image: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
  let r = try qemuCheck(image)
  #expect(r.status == 0, "qemu-img check: \(r.stdout)\(r.stderr)", sourceLocation: sourceLocation)
}

/// Requires `qemu-img compare` to find `image` identical to the raw file `raw`.
func expectSameContent(
  _ image: String, _ raw: String, sourceLocation: SourceLocation = #_sourceLocation
) throws {
  let r = try run("qemu-img", ["compare", "-F", "raw", image, raw], check: false)
  #expect(r.status == 0, "qemu-img compare: \(r.stdout)\(r.stderr)", sourceLocation: sourceLocation)
}

/// A new 8 MiB image `name` of `format` in `scratch` over the raw backing file base.raw, which
/// holds 0x2c in every byte; returns its path.
func imageOverFilledBase(_ name: String, format: String, scratch: Scratch) throws -> String {
  let base = scratch.file("base.raw")
  let image = scratch.file(name)
  try Qemu.create(base, format: "raw", size: "8M")
  try Qemu.io(base, format: "raw", ["write -P 0x2c 0 8M"])
  try Qemu.create(image, format: format, size: "8M", backing: "base.raw", backingFormat: "raw")
  return image
}

/// An open file for positional I/O on a mounted disk.raw or a mirror file.
final class PositionalFile {
  private(set) var fd: Int32
  let path: String

  init(_ path: String, flags: Int32 = O_RDWR) throws {
    self.path = path
    fd = open(path, flags | O_CLOEXEC)
    guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
  }

  deinit { close() }

  /// Closes the file (before unmounting: a file still open makes the mount busy). Closing a
  /// file on disk.raw makes vdiskfs write everything back (FUSE flush).
  func close() {
    if fd >= 0 { _ = Glibc.close(fd) }
    fd = -1
  }

  func write(_ bytes: [UInt8], at offset: UInt64) throws {
    let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
    guard n == bytes.count else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
  }

  func read(at offset: UInt64, count: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
    guard n >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    bytes.removeLast(count - n)
    return bytes
  }

  func sync() throws {
    guard fsync(fd) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
  }

  /// PUNCH_HOLE (0x02 | KEEP_SIZE 0x01) or ZERO_RANGE (0x10), through the fallocate(1) command
  /// (Swift's Glibc module does not export fallocate).
  func zero(at offset: UInt64, length: UInt64, punch: Bool) throws {
    try run(
      "fallocate", [punch ? "--punch-hole" : "--zero-range", "-o", "\(offset)", "-l", "\(length)", path])
  }
}
