import Foundation
import TestSupport
import Testing

/// A real ENOSPC, for every writable format: the image lives on a 16 MiB tmpfs that a filler
/// file leaves about 3 MiB of, and a writer fills it through disk.raw with allocating writes,
/// each fsync'd. The write (or fsync) that finds the file system full fails with ENOSPC (not
/// EIO), and so does the next allocating write; the daemon stays up, every byte reads back right,
/// and a write in place (no new space needed) and its fsync still work. Once the filler is
/// deleted, the failed operation and further writes succeed. After the unmount, QEMU finds the
/// image consistent (leaks allowed) holding every fsync'd write.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct FullDiskTests {
  struct Setup: CustomTestStringConvertible, Sendable {
    var format: String
    var options: [String]
    /// `qemu-img check` knows the format (vpc: it does not).
    var checkable = true
    var testDescription: String { format }
  }

  static let setups: [Setup] = [
    Setup(format: "qcow2", options: []),
    Setup(format: "vmdk", options: []),
    Setup(format: "vhdx", options: ["block_size=1M"]),
    Setup(format: "vpc", options: ["force_size=on"], checkable: false),
    Setup(format: "vdi", options: ["static=off"]),
  ]

  static let mib = 1 << 20
  static let size = 32 << 20
  static let chunk = 256 << 10

  @Test(arguments: setups)
  func fillingTheFileSystemUnderTheImage(_ setup: Setup) throws {
    let scratch = try Scratch("fulldisk")
    defer { scratch.remove() }
    let small = try scratch.directory("small")
    try run("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", small])
    defer { _ = try? run("umount", [small], check: false) }
    let image = small + "/disk.\(setup.format)"
    try Qemu.create(image, format: setup.format, size: "\(Self.size)", options: setup.options)
    try Qemu.io(image, format: setup.format, ["write -P 0x5a 0 1M"])
    var model = [UInt8](repeating: 0, count: Self.size)
    model.replaceSubrange(0..<Self.mib, with: repeatElement(0x5a, count: Self.mib))

    let filler = small + "/filler"
    var fs = statvfs()
    #expect(statvfs(small, &fs) == 0)
    let free = Int(fs.f_bavail) * Int(fs.f_frsize)
    try run("fallocate", ["-l", "\(free - 3 * Self.mib)", filler])

    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }
    let disk = try DirectFile(mounted.diskRaw)
    defer { disk.close() }

    // Allocating writes, each fsync'd, until the file system is full.
    var offset = 2 * Self.mib
    var serial: UInt64 = 0
    var failure: (bytes: [UInt8], offset: Int, inSync: Bool)?
    while failure == nil, offset + Self.chunk <= Self.size {
      serial += 1
      let bytes = pattern(Self.chunk, serial: serial)
      var error = disk.write(bytes, at: offset)
      var inSync = false
      if error == 0 {
        error = disk.sync()
        inSync = true
      }
      if error != 0 {
        #expect(
          error == ENOSPC, "\(inSync ? "fsync" : "write") failed with \(String(cString: strerror(error)))")
        failure = (bytes, offset, inSync)
        if inSync { model.replaceSubrange(offset..<offset + Self.chunk, with: bytes) }
      } else {
        model.replaceSubrange(offset..<offset + Self.chunk, with: bytes)
        offset += Self.chunk
      }
    }
    let (failedBytes, failedOffset, failedInSync) = try #require(failure, "the file system never ran full")
    #expect(offset > 2 * Self.mib, "no write fitted before the disk was full")

    // Still full: an allocating write far away fails the same way; the daemon serves reads.
    let far = Self.size - Self.chunk
    if !failedInSync {
      #expect(disk.write(pattern(4096, serial: 999), at: far) == ENOSPC)
    }
    #expect(isMounted(mounted.mountpoint))
    let readsBack = FaultCampaign.identical(try disk.read(at: 0, count: offset), Array(model[0..<offset]))
    #expect(readsBack, "the disk reads wrong while full")
    // In place over qemu's data: no new space needed.
    if !failedInSync {
      let inPlace = pattern(8192, serial: 500)
      #expect(disk.write(inPlace, at: 64 << 10) == 0)
      #expect(disk.sync() == 0)
      model.replaceSubrange((64 << 10)..<(64 << 10) + 8192, with: inPlace)
    }

    // Space freed: the failed operation, then more writes, then fsync work.
    try FileManager.default.removeItem(atPath: filler)
    if failedInSync {
      #expect(disk.sync() == 0)
    } else {
      #expect(disk.write(failedBytes, at: failedOffset) == 0)
      model.replaceSubrange(failedOffset..<failedOffset + Self.chunk, with: failedBytes)
    }
    for k in 1...4 {
      let bytes = pattern(Self.chunk, serial: 1000 + UInt64(k))
      let at = failedOffset + k * Self.chunk
      #expect(disk.write(bytes, at: at) == 0)
      model.replaceSubrange(at..<at + Self.chunk, with: bytes)
    }
    #expect(disk.sync() == 0)
    let readsAll = FaultCampaign.identical(try disk.read(at: 0, count: Self.size), model)
    #expect(readsAll, "the disk reads wrong after space was freed")
    disk.close()
    mounted.unmount()
    unmounted = true

    if setup.checkable {
      try Qemu.expectCheck(image, format: setup.format, leaksAllowed: true, "after the full disk")
    }
    let content = try Qemu.rawContent(of: image, format: setup.format, scratch: scratch)
    let same = FaultCampaign.identical(content, model)
    #expect(same, "first difference at \(firstDifference(content, model) ?? -1)")
  }
}

/// disk.raw opened with O_DIRECT: each write reaches vdiskfs as it is made and its error comes
/// back from that very pwrite. Returns errno values instead of throwing, for the tests to compare.
final class DirectFile {
  static let oDirect: Int32 = 0o40000  // x86-64 and arm64 differ; the CI machines are x86-64
  private var fd: Int32
  private let buffer: UnsafeMutableRawPointer
  private let capacity = 32 << 20

  init(_ path: String, writable: Bool = true) throws {
    fd = open(path, (writable ? O_RDWR : O_RDONLY) | Self.oDirect | O_CLOEXEC)
    guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    var aligned: UnsafeMutableRawPointer?
    guard posix_memalign(&aligned, 4096, capacity) == 0, let aligned else {
      Glibc.close(fd)
      throw POSIXError(.ENOMEM)
    }
    buffer = aligned
  }

  deinit {
    close()
    free(buffer)
  }

  func close() {
    if fd >= 0 { _ = Glibc.close(fd) }
    fd = -1
  }

  /// 0, or the errno of the pwrite (a short write counts as EIO). `bytes` is a multiple of 512.
  func write(_ bytes: [UInt8], at offset: Int) -> Int32 {
    precondition(bytes.count <= capacity && bytes.count % 512 == 0 && offset % 512 == 0)
    bytes.withUnsafeBytes { source in
      if let base = source.baseAddress { buffer.copyMemory(from: base, byteCount: source.count) }
    }
    let n = pwrite(fd, buffer, bytes.count, off_t(offset))
    if n < 0 { return errno }
    return n == bytes.count ? 0 : EIO
  }

  /// Reads `count` bytes (a multiple of 512) at `offset`; throws the errno.
  func read(at offset: Int, count: Int) throws -> [UInt8] {
    precondition(count <= capacity && count % 512 == 0 && offset % 512 == 0)
    let n = pread(fd, buffer, count, off_t(offset))
    guard n >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    return [UInt8](UnsafeRawBufferPointer(start: buffer, count: n))
  }

  /// 0, or the errno of the fsync.
  func sync() -> Int32 { fsync(fd) == 0 ? 0 : errno }
}
