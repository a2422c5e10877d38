import Foundation
import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// Opening backing chains: path resolution, formats, loops, depth, missing files.
@Suite struct ChainTests {
  @Test func threeDeepChainWithRelativePathsInOtherDirectories() throws {
    let scratch = try Scratch("chain3")
    defer { scratch.remove() }
    let baseDir = try scratch.directory("images/base")
    let midDir = try scratch.directory("images/mid")
    let topDir = try scratch.directory("vm")
    let raw = baseDir + "/base.raw"
    try sh("truncate -s 4M \(raw)")
    try Qemu.scatterPatterns(raw, format: "raw", size: 4 << 20, count: 30, seed: 1)
    // Relative names, resolved against the directory of the image that names them.
    try Qemu.create(midDir + "/mid.qcow2", size: "4M", backing: "../base/base.raw", backingFormat: "raw")
    try Qemu.scatterPatterns(midDir + "/mid.qcow2", size: 4 << 20, count: 30, seed: 2)
    try Qemu.create(
      topDir + "/top.qcow2", size: "4M", backing: "../images/mid/mid.qcow2", backingFormat: "qcow2")
    try Qemu.scatterPatterns(topDir + "/top.qcow2", size: 4 << 20, count: 30, seed: 3)
    try Qemu.io(topDir + "/top.qcow2", ["write -z 1M 64k"])

    // Open by a relative path, as a user would. (Without chdir: the working directory is
    // process-wide, and changing it would disturb tests running in parallel.)
    let cwdDepth = FileManager.default.currentDirectoryPath.split(separator: "/").count
    let relative = String(repeating: "../", count: cwdDepth) + String(topDir.dropFirst()) + "/top.qcow2"
    #expect(!relative.hasPrefix("/"))
    let chain = try openChain(relative)
    #expect(chain.layers.count == 3)
    #expect(chain.layers.map(\.formatName) == ["qcow2", "qcow2", "raw"])
    // Backing files by their resolved paths (what `info --backing-chain` shows).
    #expect(chain.layers.map(\.file.path) == [topDir + "/top.qcow2", midDir + "/mid.qcow2", raw])
    let expected = try Qemu.rawContent(of: topDir + "/top.qcow2", scratch: scratch)
    let actual = try readAll(chain)
    #expect(firstDifference(actual, expected) == nil)

    // Top layer only.
    let topOnly = try openChain(topDir + "/top.qcow2", OpenOptions(openBacking: false))
    #expect(topOnly.layers.count == 1)
  }

  @Test func backingSmallerThanTheTop() throws {
    let scratch = try Scratch("small-backing")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    let top = scratch.file("top.qcow2")
    try Qemu.create(base, size: "1M")
    try Qemu.io(base, ["write -P 0x66 0 1M"])
    try Qemu.create(top, size: "1M", backing: "base.qcow2", backingFormat: "qcow2")
    try Qemu.img("resize", top, "3M")
    try Qemu.io(top, ["write -P 0x67 2M 4k"])
    try expectMatchesQemu(top, scratch: scratch)
    let chain = try openChain(top)
    #expect(try chain.read(at: (1 << 20) - 1, count: 2) == [0x66, 0])
  }

  @Test func backingLoop() throws {
    let scratch = try Scratch("loop")
    defer { scratch.remove() }
    let a = scratch.file("a.qcow2")
    let b = scratch.file("b.qcow2")
    try Qemu.create(b, size: "1M")
    try Qemu.create(a, size: "1M", backing: "b.qcow2", backingFormat: "qcow2")
    try Qemu.img("rebase", "-u", "-b", "a.qcow2", "-F", "qcow2", b)
    expectVDiskError(.corrupt, [a, "backing chain loops: \(a) → \(b) → \(a)"]) { _ = try openChain(a) }
    // A self-loop.
    try Qemu.img("rebase", "-u", "-b", "a.qcow2", "-F", "qcow2", a)
    expectVDiskError(.corrupt, ["backing chain loops: \(a) → \(a)"]) { _ = try openChain(a) }
  }

  @Test func missingBackingFile() throws {
    let scratch = try Scratch("missing")
    defer { scratch.remove() }
    let top = scratch.file("top.qcow2")
    try Qemu.create(scratch.file("base.qcow2"), size: "1M")
    try Qemu.create(top, size: "1M", backing: "base.qcow2", backingFormat: "qcow2")
    try FileManager.default.removeItem(atPath: scratch.file("base.qcow2"))
    expectVDiskError(
      .notFound,
      [top, "backing file \(scratch.file("base.qcow2")) (named \"base.qcow2\" by \(top)) does not exist"]
    ) { _ = try openChain(top) }
    expectVDiskError(.notFound, [scratch.file("nope.qcow2")]) {
      _ = try openChain(scratch.file("nope.qcow2"))
    }
  }

  @Test func chainDepthLimit() throws {
    let scratch = try Scratch("deep")
    defer { scratch.remove() }
    try Qemu.create(scratch.file("l0.qcow2"), size: "64k")
    try Qemu.io(scratch.file("l0.qcow2"), ["write -P 0x10 0 512"])
    for i in 1...64 {
      try Qemu.create(
        scratch.file("l\(i).qcow2"), size: "64k", backing: "l\(i - 1).qcow2", backingFormat: "qcow2")
    }
    // 64 layers (l63 … l0) open; 65 do not.
    let chain = try openChain(scratch.file("l63.qcow2"))
    #expect(chain.layers.count == 64)
    #expect(try chain.read(at: 0, count: 1) == [0x10])
    expectVDiskError(.unsupported, [scratch.file("l64.qcow2"), "deeper than 64"]) {
      _ = try openChain(scratch.file("l64.qcow2"))
    }
  }

  @Test func backingFormatRules() throws {
    let scratch = try Scratch("formats")
    defer { scratch.remove() }
    let raw = scratch.file("base.img")
    let top = scratch.file("top.qcow2")
    try sh("truncate -s 1M \(raw)")
    try Qemu.io(raw, format: "raw", ["write -P 0x55 0 4k"])
    // Named qcow2 but the file is raw: refused, never guessed.
    try Qemu.create(top, size: "1M", backing: "base.img", backingFormat: "raw")
    try Qemu.img("rebase", "-u", "-b", "base.img", "-F", "qcow2", top)
    expectVDiskError(.corrupt, [raw, "qcow2 magic"]) { _ = try openChain(top) }
    // No format recorded (the backing format extension renamed to an unknown type): probed, raw
    // as the last resort.
    let head = try [UInt8](Data(contentsOf: URL(fileURLWithPath: top)).prefix(65536))
    let type: [UInt8] = [0xE2, 0x79, 0x2A, 0xCA]
    let at = try #require((104..<60000).first { Array(head[$0..<$0 + 4]) == type })
    try patch(top, at: UInt64(at), 0x1234_5678, width: 4)
    let probed = try openChain(top)
    #expect(probed.layers.map(\.formatName) == ["qcow2", "raw"])
    #expect(try probed.read(at: 0, count: 1) == [0x55])
    // Named as another known format whose magic the file lacks.
    try Qemu.img("rebase", "-u", "-b", "base.img", "-F", "vmdk", top)
    expectVDiskError(.corrupt, [raw, "vmdk magic"]) { _ = try openChain(top) }
    // A format we do not know (qemu-img rebase refuses unknown names; patch the extension).
    let head2 = try [UInt8](Data(contentsOf: URL(fileURLWithPath: top)).prefix(65536))
    let ext = try #require((104..<60000).first { Array(head2[$0..<$0 + 4]) == type })
    try patch(top, at: UInt64(ext + 8), bytes: Array("qux\0".utf8))
    try patch(top, at: UInt64(ext + 4), 3, width: 4)
    expectVDiskError(.unsupported, [top, "\"qux\""]) { _ = try openChain(top) }
    // --format qcow2 on a raw file.
    expectVDiskError(.corrupt, [raw, "qcow2 magic"]) {
      _ = try openChain(raw, OpenOptions(format: QCOW2Driver.self))
    }
    // --format raw on a qcow2 file: shown as raw, as stated.
    let asRaw = try openChain(top, OpenOptions(format: RawDriver.self))
    #expect(asRaw.layers.map(\.formatName) == ["raw"])
  }
}
