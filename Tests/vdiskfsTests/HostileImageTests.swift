import Foundation
import TestSupport
import Testing

func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
  withUnsafeBytes(of: value.bigEndian) { Array($0) }
}

/// Hostile images through the CLI: one clear error naming the file and the fault, the documented
/// exit code, no crash (exit codes ≥ 128), no hang (timeout), and no mount left behind.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct HostileImageTests {
  struct Case: CustomTestStringConvertible, Sendable {
    var name: String
    var exitCodes: Set<Int32>
    var messageContains: [String]
    var make: @Sendable (Scratch) throws -> String
    var testDescription: String { name }
  }

  static func plain(_ s: Scratch, _ name: String = "bad.qcow2", size: String = "8M") throws -> String {
    let img = s.file(name)
    try Qemu.create(img, size: size)
    try Qemu.io(img, ["write -P 0x42 0 128k"])
    return img
  }

  static let cases: [Case] = [
    Case(name: "truncated to the header", exitCodes: [4], messageContains: ["bad.qcow2"]) { s in
      let img = try plain(s)
      try run("truncate", ["-s", "120", img])
      return img
    },
    Case(name: "L1 table beyond end of file", exitCodes: [4], messageContains: ["bad.qcow2", "L1"]) { s in
      let img = try plain(s)
      try patch(img, at: 40, bytes: bigEndian(UInt64(0x7f00_0000)))
      return img
    },
    Case(name: "huge l1_size", exitCodes: [4, 5], messageContains: ["bad.qcow2", "l1_size"]) { s in
      let img = try plain(s)
      try patch(img, at: 36, bytes: bigEndian(UInt32(0x7fff_ffff)))
      return img
    },
    Case(name: "unknown incompatible bit", exitCodes: [5], messageContains: ["bad.qcow2", "bit 9"]) { s in
      let img = try plain(s)
      try patch(img, at: 72, bytes: bigEndian(UInt64(1 << 9)))
      return img
    },
    Case(name: "backing loop a → b → a", exitCodes: [4], messageContains: ["a.qcow2", "loop"]) { s in
      let a = s.file("a.qcow2")
      let b = s.file("b.qcow2")
      try Qemu.create(b, size: "4M")
      try Qemu.create(a, size: "4M", backing: "b.qcow2", backingFormat: "qcow2")
      try Qemu.img("rebase", "-u", "-F", "qcow2", "-b", "a.qcow2", b)
      return a
    },
    Case(name: "missing backing file", exitCodes: [3], messageContains: ["gone.qcow2"]) { s in
      let base = s.file("gone.qcow2")
      try Qemu.create(base, size: "4M")
      let img = s.file("top.qcow2")
      try Qemu.create(img, size: "4M", backing: "gone.qcow2", backingFormat: "qcow2")
      try FileManager.default.removeItem(atPath: base)
      return img
    },
    // qemu-img cannot create LUKS images on these machines (its PBKDF timing fails), so the
    // crypt_method field (header offset 32) is set on a plain image: 1 = AES, 2 = LUKS.
    Case(name: "encrypted (AES)", exitCodes: [5], messageContains: ["encrypted images are not supported"]) {
      s in
      let img = try plain(s)
      try patch(img, at: 32, bytes: bigEndian(UInt32(1)))
      return img
    },
    Case(name: "encrypted (LUKS)", exitCodes: [5], messageContains: ["encrypted images are not supported"]) {
      s in
      let img = try plain(s)
      try patch(img, at: 32, bytes: bigEndian(UInt32(2)))
      return img
    },
    Case(
      name: "qed cluster size not a power of two", exitCodes: [4],
      messageContains: ["bad.qed", "cluster size"]
    ) {
      s in
      let img = s.file("bad.qed")
      try Qemu.create(img, format: "qed", size: "8M")
      try patch(img, at: 4, bytes: [0x00, 0x30, 0x00, 0x00])  // 12288, little-endian
      return img
    },
    Case(name: "qed L1 table beyond end of file", exitCodes: [4], messageContains: ["bad.qed", "L1 table"]) {
      s in
      let img = s.file("bad.qed")
      try Qemu.create(img, format: "qed", size: "8M")
      try patch(img, at: 40, bytes: [0, 0, 0, 0x7F, 0, 0, 0, 0])
      return img
    },
    Case(
      name: "qcow v1 encrypted (AES)", exitCodes: [5], messageContains: ["encrypted images are not supported"]
    ) {
      s in
      let img = s.file("bad.qcow")
      try Qemu.create(img, format: "qcow", size: "8M")
      try patch(img, at: 36, bytes: bigEndian(UInt32(1)))
      return img
    },
    Case(
      name: "qcow v1 cluster bits out of range", exitCodes: [4],
      messageContains: ["bad.qcow", "cluster bits"]
    ) {
      s in
      let img = s.file("bad.qcow")
      try Qemu.create(img, format: "qcow", size: "8M")
      try patch(img, at: 32, bytes: [30])
      return img
    },
    Case(
      name: "dmg property list beyond the trailer", exitCodes: [4],
      messageContains: ["bad.dmg", "property list", "beyond the trailer"]
    ) {
      s in
      let img = s.file("bad.dmg")
      // 1 KiB of data fork, then a trailer whose XML offset (koly +216) lies past it.
      var koly = Array("koly".utf8) + [UInt8](repeating: 0, count: 508)
      koly.replaceSubrange(216..<232, with: bigEndian(UInt64(1 << 40)) + bigEndian(UInt64(100)))
      try Data([UInt8](repeating: 0, count: 1024) + koly).write(to: URL(fileURLWithPath: img))
      return img
    },
    // The trailer is sound and the fault lies in its tables, which a read-only format reads after
    // deciding to mount read-only: still one line (the error), no read-only notice before it.
    Case(
      name: "dmg property list that is not XML", exitCodes: [4],
      messageContains: ["bad.dmg", "property list"]
    ) {
      s in
      let img = s.file("bad.dmg")
      var koly = Array("koly".utf8) + [UInt8](repeating: 0, count: 508)
      koly.replaceSubrange(4..<12, with: bigEndian(UInt32(4)) + bigEndian(UInt32(512)))
      koly.replaceSubrange(216..<232, with: bigEndian(UInt64(1024)) + bigEndian(UInt64(100)))
      let garbage = [UInt8](repeating: 0x41, count: 100)
      try Data([UInt8](repeating: 0, count: 1024) + garbage + koly).write(to: URL(fileURLWithPath: img))
      return img
    },
  ]

  @Test(arguments: cases)
  func refusedWithOneClearError(_ c: Case) throws {
    let scratch = try Scratch("hostile")
    defer { scratch.remove() }
    let image = try c.make(scratch)
    let mnt = try scratch.directory("mnt")
    let r = try run("timeout", ["30", vdiskfsBinary, image, mnt], check: false)
    defer { if isMounted(mnt) { _ = try? run("fusermount3", ["-u", "-z", mnt], check: false) } }
    #expect(c.exitCodes.contains(r.status), "exit \(r.status): \(r.stderr)")
    #expect(!isMounted(mnt))
    let lines = r.stderr.split(separator: "\n")
    #expect(lines.count == 1, "expected one line, got: \(r.stderr)")
    #expect(r.stderr.hasPrefix("vdiskfs: "))
    for needle in c.messageContains {
      #expect(r.stderr.contains(needle), "'\(needle)' missing from: \(r.stderr)")
    }
    // `info` refuses the same images the same way (except those whose fault is in the chain).
    if !c.name.contains("backing") {
      let info = try run("timeout", ["30", vdiskfsBinary, "info", image], check: false)
      #expect(c.exitCodes.contains(info.status), "info exit \(info.status): \(info.stderr)")
    }
  }

  /// A bad L2 pointer in the second half of the disk: either the open refuses the image, or only
  /// reads of that half fail with EIO while the rest of the disk reads fine and the mount lives.
  @Test func badL2PointerFailsOnlyTheAffectedRead() throws {
    let scratch = try Scratch("hostile")
    defer { scratch.remove() }
    let img = scratch.file("l2.qcow2")
    try Qemu.create(img, size: "1G")
    try Qemu.io(img, ["write -P 0x42 0 64k", "write -P 0x43 600M 64k"])
    let l1 = try field(img, at: 40, width: 8)
    try patch(img, at: l1 + 8, bytes: bigEndian(UInt64(0x8000_0000_7f00_0000)))
    let mnt = try scratch.directory("mnt")
    let r = try run("timeout", ["30", vdiskfsBinary, img, mnt], check: false)
    defer { if isMounted(mnt) { _ = try? run("fusermount3", ["-u", "-z", mnt], check: false) } }
    if r.status != 0 {
      #expect(r.status == 4 && r.stderr.contains("l2.qcow2"), "\(r.status): \(r.stderr)")
      return
    }
    let disk = mnt + "/disk.raw"
    let good = try run("dd", ["if=\(disk)", "bs=64k", "count=1", "status=none"], check: false)
    #expect(good.status == 0)
    let bad = try run("dd", ["if=\(disk)", "of=/dev/null", "bs=64k", "skip=9600", "count=1"], check: false)
    #expect(bad.status != 0)
    #expect(bad.stderr.contains("Input/output error"), "\(bad.stderr)")
    let again = try run("dd", ["if=\(disk)", "bs=64k", "count=1", "status=none"], check: false)
    #expect(again.status == 0, "the mount must survive a corrupt read")
  }
}
