import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

/// Safe defaults for untrusted images, through the real binary: a probed raw image cannot be
/// turned into another format through disk.raw; FIFOs fail fast instead of hanging; backing_dir,
/// nobacking, and `info --backing-chain` showing every resolved path.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct UntrustedImageMountTests {
  static let size = 4 << 20

  /// A raw image full of 0x5a, and the first sector of an empty qcow2.
  static func rawAndHeader(_ scratch: Scratch) throws -> (image: String, header: [UInt8]) {
    let image = scratch.file("disk.img")
    try run("truncate", ["-s", "\(size)", image])
    try Qemu.io(image, format: "raw", ["write -P 0x5a 0 \(size)"])
    let qcow2 = scratch.file("magic.qcow2")
    try Qemu.create(qcow2, size: "1M")
    let header = [UInt8](try Data(contentsOf: URL(fileURLWithPath: qcow2)).prefix(512))
    return (image, header)
  }

  static func expectErrno(_ code: POSIXErrorCode, _ body: () throws -> Void) {
    do {
      try body()
      Issue.record("expected \(code)")
    } catch let error as POSIXError {
      #expect(error.code == code)
    } catch {
      Issue.record("unexpected error \(error)")
    }
  }

  /// Probed raw: a qcow2 header written over sector 0 is refused with EPERM (also when only its
  /// magic completes a header written before), the file keeps its bytes; harmless writes to
  /// sector 0 land.
  @Test func aProbedRawMountRefusesAFormatHeader() throws {
    let scratch = try Scratch("untrusted")
    defer { scratch.remove() }
    let (image, header) = try Self.rawAndHeader(scratch)
    var expected = try Data(contentsOf: URL(fileURLWithPath: image))
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }
    let disk = try PositionalFile(mounted.diskRaw)
    Self.expectErrno(.EPERM) { try disk.write(header, at: 0) }
    try disk.write(Array(header[4...]), at: 4)
    expected.replaceSubrange(4..<512, with: header[4...])
    Self.expectErrno(.EPERM) { try disk.write(Array(header[0..<4]), at: 0) }
    #expect(try disk.read(at: 0, count: 4) == [0x5a, 0x5a, 0x5a, 0x5a])
    let mbrEnd: [UInt8] = [0x55, 0xAA]
    try disk.write(mbrEnd, at: 510)
    expected.replaceSubrange(510..<512, with: mbrEnd)
    try disk.sync()
    disk.close()
    mounted.unmount()
    unmounted = true
    #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == expected)
    #expect(try FormatRegistry.standard.probe(try ImageFile.open(image)).name == "raw")
  }

  /// With the format stated (`--format raw` or `-o format=raw`) the same write lands, and the
  /// next probe sees qcow2.
  @Test(arguments: [["--format", "raw"], ["-o", "rw,format=raw"]])
  func aStatedRawMountAllowsIt(_ arguments: [String]) throws {
    let scratch = try Scratch("untrusted")
    defer { scratch.remove() }
    let (image, header) = try Self.rawAndHeader(scratch)
    let mounted = try MountedImage.mount(image, in: scratch, arguments, writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }
    let disk = try PositionalFile(mounted.diskRaw)
    try disk.write(header, at: 0)
    try disk.sync()
    disk.close()
    mounted.unmount()
    unmounted = true
    #expect(try FormatRegistry.standard.probe(try ImageFile.open(image)).name == "qcow2")
  }

  /// A qcow2 over a FIFO: the mount and `info --backing-chain` fail at once with the rule
  /// (exit code 5) instead of hanging; so does a FIFO as the image itself. `timeout` turns a
  /// regression into exit code 124.
  @Test func aFIFOFailsTheMountAndInfoInsteadOfHanging() throws {
    let scratch = try Scratch("untrusted")
    defer { scratch.remove() }
    let fifo = scratch.file("base.raw")
    try run("mkfifo", [fifo])
    let top = scratch.file("top.qcow2")
    try Qemu.img("create", "-f", "qcow2", "-u", "-b", "base.raw", "-F", "raw", top, "1M")
    let mnt = try scratch.directory("mnt")
    defer { if isMounted(mnt) { _ = try? run("fusermount3", ["-u", "-z", mnt], check: false) } }
    for image in [top, fifo] {
      for command in [
        [vdiskfsBinary, image, mnt, "-o", "ro"], [vdiskfsBinary, "info", "--backing-chain", image],
      ] {
        let r = try run("timeout", ["30"] + command, check: false)
        #expect(r.status == 5, "\(command): \(r.status) \(r.stderr)")
        #expect(r.stderr.contains("\(fifo): is a FIFO"), "\(r.stderr)")
        #expect(!isMounted(mnt))
      }
    }
  }

  /// `-o backing_dir=DIR` refuses a chain that leaves DIR (by a symbolic link) and mounts one
  /// inside it.
  @Test func backingDirConfinesTheMount() throws {
    let scratch = try Scratch("untrusted")
    defer { scratch.remove() }
    let images = try scratch.directory("images")
    let outside = try scratch.directory("outside")
    try Qemu.create(outside + "/base.qcow2", size: "1M")
    try Qemu.io(outside + "/base.qcow2", ["write -P 0x42 0 1M"])
    try run("ln", ["-s", outside + "/base.qcow2", images + "/base.qcow2"])
    let top = images + "/top.qcow2"
    try Qemu.create(top, size: "1M", backing: "base.qcow2", backingFormat: "qcow2")
    let mnt = try scratch.directory("mnt")
    defer { if isMounted(mnt) { _ = try? run("fusermount3", ["-u", "-z", mnt], check: false) } }
    let r = try run(
      "timeout", ["30", vdiskfsBinary, top, mnt, "-o", "ro,backing_dir=\(images)"], check: false)
    #expect(r.status == 1, "\(r.stderr)")
    #expect(r.stderr.contains("resolves to \(outside)/base.qcow2, which is outside backing_dir \(images)"))
    #expect(!isMounted(mnt))
    let info = try run(
      vdiskfsBinary, ["info", "--backing-chain", "--backing-dir", images, top], check: false)
    #expect(info.status == 1 && info.stderr.contains("outside backing_dir"), "\(info.stderr)")
    let mounted = try MountedImage.mount(top, in: scratch, ["-o", "ro,backing_dir=\(scratch.path)"])
    defer { mounted.unmount() }
    #expect(try PositionalFile(mounted.diskRaw, flags: O_RDONLY).read(at: 0, count: 1) == [0x42])
  }

  /// `backing_dir` needs a value and a directory that exists.
  @Test func backingDirOptionErrors() throws {
    let scratch = try Scratch("untrusted")
    defer { scratch.remove() }
    let image = scratch.file("a.qcow2")
    try Qemu.create(image, size: "1M")
    let mnt = try scratch.directory("mnt")
    defer { if isMounted(mnt) { _ = try? run("fusermount3", ["-u", "-z", mnt], check: false) } }
    let empty = try run(vdiskfsBinary, [image, mnt, "-o", "ro,backing_dir"], check: false)
    #expect(empty.status == 2 && empty.stderr.contains("needs a value"), "\(empty.stderr)")
    let missing = try run(
      vdiskfsBinary, [image, mnt, "-o", "ro,backing_dir=\(scratch.file("none"))"], check: false)
    #expect(missing.status == 3 && missing.stderr.contains("backing_dir does not exist"), "\(missing.stderr)")
    #expect(!isMounted(mnt))
  }

  /// `-o nobacking` opens the top alone (its backing file here is a FIFO, never opened): what the
  /// top does not hold reads as zeros, and the mount is read-only with one notice though rw
  /// was asked. `map --no-backing` likewise.
  @Test func nobackingMountsTheTopAloneReadOnly() throws {
    let scratch = try Scratch("untrusted")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    try Qemu.create(base, size: "1M")
    try Qemu.io(base, ["write -P 0x42 0 1M"])
    let top = scratch.file("top.qcow2")
    try Qemu.create(top, size: "1M", backing: "base.qcow2", backingFormat: "qcow2")
    try Qemu.io(top, ["write -P 0x43 64k 64k"])
    try FileManager.default.removeItem(atPath: base)
    try run("mkfifo", [base])
    let mnt = try scratch.directory("mnt")
    defer {
      if isMounted(mnt) {
        _ = try? run("fusermount3", ["-u", mnt], check: false)
        waitForDaemonExit(mnt)
      }
    }
    let r = try run("timeout", ["30", vdiskfsBinary, top, mnt, "-o", "rw,nobacking"], check: false)
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stderr.contains("nobacking") && r.stderr.contains("mounting read-only"), "\(r.stderr)")
    #expect(isMounted(mnt))
    let disk = mnt + "/disk.raw"
    #expect(try statFile(disk).st_mode & 0o222 == 0)
    var expected = [UInt8](repeating: 0, count: 1 << 20)
    expected.replaceSubrange((64 << 10)..<(128 << 10), with: [UInt8](repeating: 0x43, count: 64 << 10))
    #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: disk))) == expected)

    let map = try run(
      "timeout", ["30", vdiskfsBinary, "map", "--output", "json", "--no-backing", top], check: false)
    #expect(map.status == 0, "\(map.stderr)")
    #expect(
      map.stdout.contains("\"start\": 65536, \"length\": 65536, \"depth\": 0, \"present\": true"),
      "\(map.stdout)")
    let withChain = try run("timeout", ["30", vdiskfsBinary, "map", top], check: false)
    #expect(withChain.status == 5 && withChain.stderr.contains("is a FIFO"), "\(withChain.stderr)")
  }

  /// `info --backing-chain` names every file a mount would open by its resolved path: each
  /// backing image's `image:`/`filename`, and its child's `actual path`/`full-backing-filename`.
  @Test func infoShowsEveryResolvedPath() throws {
    let scratch = try Scratch("untrusted")
    defer { scratch.remove() }
    let real = try scratch.directory("real")
    let vm = try scratch.directory("vm")
    try run("ln", ["-s", real, vm + "/link"])
    try Qemu.create(real + "/base.raw", format: "raw", size: "1M")
    try Qemu.create(real + "/mid.qcow2", size: "1M", backing: "base.raw", backingFormat: "raw")
    let top = vm + "/top.qcow2"
    try Qemu.create(top, size: "1M", backing: "link/mid.qcow2", backingFormat: "qcow2")
    let human = try run(vdiskfsBinary, ["info", "--backing-chain", top]).stdout
    #expect(human.contains("backing file: link/mid.qcow2 (actual path: \(real)/mid.qcow2)"), "\(human)")
    #expect(human.contains("image: \(real)/mid.qcow2\n"), "\(human)")
    #expect(human.contains("image: \(real)/base.raw\n"), "\(human)")
    let json = try run(vdiskfsBinary, ["info", "--backing-chain", "--output", "json", top]).stdout
    let list = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
    #expect(list.map { $0["filename"] as? String } == [top, real + "/mid.qcow2", real + "/base.raw"])
    #expect(list[0]["full-backing-filename"] as? String == real + "/mid.qcow2")
    #expect(list[1]["full-backing-filename"] as? String == real + "/base.raw")
  }
}
