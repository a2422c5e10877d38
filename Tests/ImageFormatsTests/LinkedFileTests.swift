import Foundation
import ImageFormats
import RemoteStore
import RemoteStores
import TestSupport
import Testing
import VDiskCore

/// Files an image names are untrusted: paths only (no protocol, no json:), regular files or
/// block devices only, inside `backing_dir` when given; `nobacking` opens the top alone.
@Suite struct LinkedFileTests {
  /// Names QEMU would hand to a protocol driver, or parse as JSON: refused with the rule, even
  /// where a file of that name exists; names in a store vdiskfs serves (rbd:, s3://, http(s)://)
  /// are refused unless the user allows remote backing files.
  @Test(arguments: [
    "nbd:localhost:10809", "nbd://host/export", "http://example.com/base.img", "https:base.img",
    "ssh://user@host/base.img", "rbd:pool/image", "file:base.raw", "gluster+tcp://h/v/i",
    "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"/etc/passwd\"}}",
  ])
  func qcow2BackingNamesMustBePaths(_ name: String) throws {
    let scratch = try Scratch("linked")
    defer { scratch.remove() }
    try run("truncate", ["-s", "1M", scratch.file("https:base.img")])
    let top = scratch.file("top.qcow2")
    try Qemu.img("create", "-f", "qcow2", "-u", "-b", name, "-F", "raw", top, "1M")
    var cli = OpenOptions()  // as the CLI opens: with the stores it serves
    cli.stores = .standard
    if StoreRegistry.standard.store(for: name) != nil {
      // A store vdiskfs serves: only with -o remote_backing, never by default.
      expectVDiskError(.notPermitted, [top, name, "remote store", "remote_backing"]) {
        _ = try openChain(top, cli)
      }
    } else {
      let rule = name.hasPrefix("json:") ? "json: syntax" : "protocol prefix"
      expectVDiskError(.unsupported, [top, "backing file name", rule, "by path only"]) {
        _ = try openChain(top)
      }
    }
    // `info` of the top alone does not follow the name.
    #expect(try openChain(top, OpenOptions(openBacking: false)).layers.count == 1)
  }

  /// A colon after a slash is part of a path, as in QEMU.
  @Test func namesWithAColonAfterASlashArePaths() throws {
    let scratch = try Scratch("linked")
    defer { scratch.remove() }
    let base = scratch.file("a:b.raw")
    try run("truncate", ["-s", "1M", base])
    try Qemu.io(base, format: "raw", ["write -P 0x21 0 64k"])
    for name in ["./a:b.raw", base] {
      let top = scratch.file("top-\(name.count).qcow2")
      try Qemu.img("create", "-f", "qcow2", "-u", "-b", name, "-F", "raw", top, "1M")
      let chain = try openChain(top)
      #expect(chain.layers.count == 2)
      #expect(try chain.read(at: 0, count: 1) == [0x21])
    }
    #expect(LinkedFiles.protocolPrefix(of: "C:\\images\\parent.vhd") == nil)
    #expect(LinkedFiles.protocolPrefix(of: "\\\\?\\C:\\images\\parent.vhdx") == nil)
    #expect(LinkedFiles.protocolPrefix(of: "nbd+unix:///x") == "nbd+unix")
  }

  /// VMDK: a parentFileNameHint and an extent name are held to the same rule.
  @Test func vmdkParentHintAndExtentNamesMustBePaths() throws {
    let scratch = try Scratch("linked")
    defer { scratch.remove() }
    try Qemu.create(scratch.file("base-image.vmdk"), format: "vmdk", size: "1M")
    let top = scratch.file("top.vmdk")
    try Qemu.img("create", "-f", "vmdk", "-b", "base-image.vmdk", "-F", "vmdk", top)
    let bytes = try fileBytes(top, at: 0, count: 64 << 10)
    let key = Array("parentFileNameHint=\"base-image.vmdk\"".utf8)
    let at = try #require(bytes.firstRange(of: key)).lowerBound
    try patchFile(top, at: UInt64(at), Array("parentFileNameHint=\"nbd://h/x.vmdk\"".utf8))
    expectVDiskError(.unsupported, [top, "nbd://h/x.vmdk", "protocol prefix \"nbd:\""]) {
      _ = try openChain(top)
    }

    let descriptor = scratch.file("flat.vmdk")
    try Self.flatDescriptor(extent: "http://example.com/flat.raw").write(
      toFile: descriptor, atomically: true, encoding: .utf8)
    expectVDiskError(.unsupported, [descriptor, "extent file name", "protocol prefix \"http:\""]) {
      _ = try openChain(descriptor)
    }
  }

  /// VHDX: the parent locator's path is held to the rule too (a Windows drive path is a path).
  @Test func vhdxParentLocatorMustBeAPath() throws {
    let scratch = try Scratch("linked")
    defer { scratch.remove() }
    let child = scratch.file("child.vhdx")
    try VHDXBuilder.differencing(
      virtualSize: 1 << 20, parentLinkage: GUID(1, 2, 3, [4, 5, 6, 7, 8, 9, 10, 11]),
      relativePath: "nbd:host:10809"
    ).write(to: child)
    expectVDiskError(.unsupported, [child, "nbd:host:10809", "protocol prefix"]) { _ = try openChain(child) }
  }

  /// A monolithicFlat descriptor over one extent file.
  static func flatDescriptor(extent: String, sectors: Int = 2048) -> String {
    """
    # Disk DescriptorFile
    version=1
    CID=fffffffe
    parentCID=ffffffff
    createType="monolithicFlat"

    # Extent description
    RW \(sectors) FLAT "\(extent)" 0

    # The Disk Data Base
    #DDB
    ddb.virtualHWVersion = "4"
    ddb.geometry.cylinders = "2"
    ddb.geometry.heads = "16"
    ddb.geometry.sectors = "63"
    ddb.adapterType = "ide"

    """
  }
}

/// Backing files, extent files and images must be regular files or block devices: a FIFO would
/// hang the open (it waits for a writer) and the reads, so it is refused before and after the
/// (non-blocking) open.
@Suite struct LinkedFileTypeTests {
  enum Kind: String, CaseIterable, Sendable {
    case fifo, socket, characterDevice, directory
    var text: String {
      switch self {
      case .fifo: "is a FIFO"
      case .socket: "is a socket"
      case .characterDevice: "is a character device"
      case .directory: "is a directory"
      }
    }

    /// Makes one at `path` (a character device: a symbolic link to /dev/zero).
    func make(_ path: String) throws {
      switch self {
      case .fifo: try run("mkfifo", [path])
      case .socket:
        try run(
          "python3", ["-c", "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", path])
      case .characterDevice: try run("ln", ["-s", "/dev/zero", path])
      case .directory: try run("mkdir", [path])
      }
    }
  }

  @Test(arguments: Kind.allCases)
  func aBackingFileOfTheWrongTypeIsRefused(_ kind: Kind) throws {
    let scratch = try Scratch("linkedtype")
    defer { scratch.remove() }
    let special = scratch.file("base.raw")
    try kind.make(special)
    let top = scratch.file("top.qcow2")
    try Qemu.img("create", "-f", "qcow2", "-u", "-b", "base.raw", "-F", "raw", top, "1M")
    let outcome = try openWithin(seconds: 20, unblocking: kind == .fifo ? special : nil) {
      _ = try openChain(top)
    }
    #expect(outcome.finished, "opening a chain over \(kind) hung")
    // The file is opened by its resolved path: the link's target for the device.
    let shown = kind == .characterDevice ? "/dev/zero" : special
    Self.expect(outcome.error, .unsupported, [shown, kind.text, "regular file or a block device"])
  }

  /// A FIFO as the image itself, and as a VMDK extent file.
  @Test func aFIFOImageOrExtentIsRefusedWithoutHanging() throws {
    let scratch = try Scratch("linkedtype")
    defer { scratch.remove() }
    let fifo = scratch.file("disk.img")
    try run("mkfifo", [fifo])
    for writable in [false, true] {
      let outcome = try openWithin(seconds: 20, unblocking: fifo) {
        _ = try openChain(fifo, OpenOptions(writable: writable))
      }
      #expect(outcome.finished, "opening a FIFO image hung")
      Self.expect(outcome.error, .unsupported, [fifo, "is a FIFO"])
    }
    let descriptor = scratch.file("flat.vmdk")
    try LinkedFileTests.flatDescriptor(extent: "disk.img").write(
      toFile: descriptor, atomically: true, encoding: .utf8)
    let outcome = try openWithin(seconds: 20, unblocking: fifo) { _ = try openChain(descriptor) }
    #expect(outcome.finished, "opening a VMDK over a FIFO extent hung")
    Self.expect(outcome.error, .unsupported, [fifo, "is a FIFO"])
  }

  static func expect(
    _ error: (any Error)?, _ kind: VDiskError.Kind, _ fragments: [String],
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    expectVDiskError(kind, fragments, sourceLocation: sourceLocation) { if let error { throw error } }
  }
}

/// What `openWithin` saw: whether `body` returned in time, and what it threw.
struct TimedOutcome {
  var finished: Bool
  var error: (any Error)?
}

/// Runs `body` on its own thread for at most `seconds`. If it is still running then (a
/// regression: an open or read blocked on a FIFO), the FIFO at `unblocking` is opened and closed
/// for writing, which ends a reader's wait with end-of-file, so the test fails instead of hanging.
func openWithin(seconds: Double, unblocking fifo: String?, _ body: @escaping @Sendable () throws -> Void)
  throws -> TimedOutcome
{
  final class Result: @unchecked Sendable {
    let lock = NSLock()
    var error: (any Error)?
  }
  let result = Result()
  let done = DispatchSemaphore(value: 0)
  Thread.detachNewThread {
    do { try body() } catch {
      result.lock.lock()
      result.error = error
      result.lock.unlock()
    }
    done.signal()
  }
  let finished = done.wait(timeout: .now() + seconds) == .success
  if !finished, let fifo {
    for _ in 0..<100 {
      let fd = open(fifo, O_RDWR | O_NONBLOCK)
      if fd >= 0 { close(fd) }
      if done.wait(timeout: .now() + 0.1) == .success { break }
    }
  }
  result.lock.lock()
  defer { result.lock.unlock() }
  return TimedOutcome(finished: finished, error: result.error)
}
