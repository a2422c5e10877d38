import Foundation
import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

@Suite struct OverlayAndLockTests {
  /// Images made by QCOW2Creator pass `qemu-img check` and read like their base.
  @Test(arguments: ["raw", "qcow2"])
  func createdOverlayIsAValidQcow2(_ baseFormat: String) throws {
    let scratch = try Scratch("overlay")
    defer { scratch.remove() }
    let base = scratch.file("base.\(baseFormat)")
    try Qemu.create(base, format: baseFormat, size: "20M")
    try Qemu.io(base, format: baseFormat, ["write -P 0x61 1M 3M", "write -P 0x62 19M 1M"])
    let before = try sh("sha256sum \(base)").stdout
    let overlay = scratch.file("top.qcow2")
    try Overlay.prepare(overlay, over: base, logger: logger)
    let check = try run("qemu-img", ["check", overlay], check: false)
    #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
    let info =
      try JSONSerialization.jsonObject(
        with: Data(try Qemu.img("info", "--output=json", overlay).utf8)) as? [String: Any]
    #expect(info?["backing-filename-format"] as? String == baseFormat)
    #expect(info?["virtual-size"] as? Int == 20 << 20)
    #expect(
      try Qemu.rawContent(of: overlay, scratch: scratch) == (try Qemu.rawContent(of: base, scratch: scratch)))
    // QEMU can write it, and the base never changes.
    try Qemu.io(overlay, ["write -P 0x63 0 2M"])
    #expect(try run("qemu-img", ["check", overlay], check: false).status == 0)
    #expect(try sh("sha256sum \(base)").stdout == before)
    // An existing overlay is used as it is.
    try Overlay.prepare(overlay, over: base, logger: logger)
    #expect(try openChain(overlay).read(at: 0, count: 1) == [0x63])
  }

  @Test func creatorRefusesAnExistingFile() throws {
    let scratch = try Scratch("overlay")
    defer { scratch.remove() }
    let path = scratch.file("x.qcow2")
    try Qemu.create(path, size: "1M")
    #expect(throws: VDiskError.self) { try QCOW2Creator.create(at: path, virtualSize: 1 << 20) }
  }

  @Test(arguments: [UInt64(1) << 20, UInt64(1) << 40, (UInt64(1) << 30) + 12345])
  func createdEmptyImagesPassQemuCheck(_ size: UInt64) throws {
    let scratch = try Scratch("overlay")
    defer { scratch.remove() }
    let path = scratch.file("e.qcow2")
    try QCOW2Creator.create(at: path, virtualSize: size)
    let check = try run("qemu-img", ["check", path], check: false)
    #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
    #expect(try openChain(path).virtualSize == size)
  }

  /// The locks QEMU takes, seen from QEMU: a chain opened writable with locks makes
  /// `qemu-img info` fail with QEMU's lock error; a reader does not; force-share takes none.
  @Test func locksConflictWithQemuLikeQemuItself() throws {
    let scratch = try Scratch("lock")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    try Qemu.create(base, size: "4M")
    let top = scratch.file("top.qcow2")
    try Qemu.create(top, size: "4M", backing: base, backingFormat: "qcow2")
    do {
      let chain = try openChain(top, OpenOptions(writable: true, lock: true))
      let info = try run("qemu-img", ["info", top], check: false)
      #expect(info.status != 0)
      #expect(info.stderr.contains("Failed to get shared \"write\" lock"), "\(info.stderr)")
      // The backing file is held as a reader: QEMU may read it, not write it.
      #expect(try run("qemu-img", ["info", base], check: false).status == 0)
      #expect(try run("qemu-io", ["-c", "write 0 4k", base], check: false).status != 0)
      // A second writer in this process (another open file description) is refused too.
      expectVDiskError(.locked, [top, "lock"]) {
        _ = try openChain(top, OpenOptions(writable: true, lock: true))
      }
      _ = chain
    }
    // Closed: QEMU gets it again.
    #expect(try run("qemu-img", ["info", top], check: false).status == 0)
    do {
      let reader = try openChain(top, OpenOptions(lock: true))
      #expect(try run("qemu-img", ["info", top], check: false).status == 0)
      #expect(try run("qemu-io", ["-c", "write 0 4k", top], check: false).status != 0)
      _ = reader
    }
    do {
      let unlocked = try openChain(top, OpenOptions(lock: false))
      #expect(try run("qemu-io", ["-c", "write 0 4k", top], check: false).status == 0)
      _ = unlocked
    }
  }

  /// And the other way round: an image qemu-storage-daemon holds writable cannot be opened
  /// writable (nor read with locks), but can be read with force-share.
  @Test func refusesAnImageQemuHoldsWritable() throws {
    let scratch = try Scratch("lock")
    defer { scratch.remove() }
    let image = scratch.file("vm.qcow2")
    try Qemu.create(image, size: "4M")
    let export = scratch.file("export")
    #expect(FileManager.default.createFile(atPath: export, contents: nil))
    let daemon = try sh(
      """
      qemu-storage-daemon --blockdev driver=file,node-name=f,filename=\(image) \
        --blockdev driver=qcow2,node-name=q,file=f \
        --nbd-server addr.type=unix,addr.path=\(scratch.file("nbd.sock")) \
        --export type=nbd,id=e,node-name=q,writable=on >/dev/null 2>&1 & echo $!
      """
    ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    defer { _ = try? sh("kill -TERM \(daemon); while kill -0 \(daemon) 2>/dev/null; do sleep 0.05; done") }
    try sh("for i in $(seq 1 100); do [ -S \(scratch.file("nbd.sock")) ] && exit 0; sleep 0.05; done; exit 1")
    expectVDiskError(.locked, [image, "lock"]) {
      _ = try openChain(image, OpenOptions(writable: true, lock: true))
    }
    expectVDiskError(.locked, [image, "shared \"write\" lock"]) {
      _ = try openChain(image, OpenOptions(lock: true))
    }
    #expect(try openChain(image, OpenOptions(lock: false)).virtualSize == 4 << 20)
  }
}
