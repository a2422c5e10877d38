import Foundation
import TestSupport
import Testing

/// Each fixture is mounted by the real binary and `disk.raw` must equal `qemu-img convert -O raw`.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct MountMatrixTests {
  struct Fixture: CustomTestStringConvertible, Sendable {
    var name: String
    /// The format to tell qemu-img for the oracle (qemu probes a fixed VHD as raw).
    var format: String? = nil
    var make: @Sendable (Scratch) throws -> String
    var testDescription: String { name }
  }

  /// An image of `format` made by qemu-img with `options`, patterned by qemu-io.
  static func formatFixture(_ format: String, _ options: [String], size: UInt64 = 12 << 20) -> Fixture {
    Fixture(name: "\(format) \(options.joined(separator: ","))", format: format) { s in
      let img = s.file("image.\(format)")
      try Qemu.create(img, format: format, size: "\(size)", options: options)
      try Qemu.scatterPatterns(img, format: format, size: size, count: 40, seed: 21, unit: 4096, maxUnits: 64)
      try Qemu.io(img, format: format, ["write -z 1M 256k"])
      return img
    }
  }

  /// Every (sub)format qemu-img can create, read through the mount (issue: other formats).
  static let formatFixtures: [Fixture] = [
    formatFixture("vmdk", ["subformat=monolithicSparse"]),
    formatFixture("vmdk", ["subformat=monolithicFlat"]),
    formatFixture("vmdk", ["subformat=twoGbMaxExtentSparse"]),
    formatFixture("vmdk", ["subformat=twoGbMaxExtentFlat"]),
    Fixture(name: "vmdk streamOptimized", format: "vmdk") { s in
      let src = s.file("src.qcow2")
      try Qemu.create(src, size: "12M")
      try Qemu.scatterPatterns(src, size: 12 << 20, count: 40, seed: 22, unit: 4096, maxUnits: 64)
      let img = s.file("image.vmdk")
      try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", src, img)
      return img
    },
    formatFixture("vhdx", ["subformat=dynamic", "block_size=1M"]),
    formatFixture("vhdx", ["subformat=dynamic", "block_size=32M", "log_size=1M"]),
    formatFixture("vhdx", ["subformat=fixed", "block_size=1M"]),
    formatFixture("vpc", ["subformat=dynamic", "force_size=on"]),
    formatFixture("vpc", ["subformat=dynamic", "force_size=off"], size: 12_345_678),
    formatFixture("vpc", ["subformat=fixed", "force_size=on"]),
    formatFixture("vdi", ["static=off"]),
    formatFixture("vdi", ["static=on"]),
    formatFixture("qed", ["cluster_size=4096", "table_size=2"]),
    formatFixture("qed", ["cluster_size=1M"]),
    Fixture(name: "qcow2 over qed over raw", format: "qcow2") { s in
      let base = s.file("base.raw")
      try Qemu.create(base, format: "raw", size: "12M")
      try Qemu.io(base, format: "raw", ["write -P 0x11 0 12M"])
      let mid = s.file("mid.qed")
      try Qemu.create(mid, format: "qed", size: "12M", backing: "base.raw", backingFormat: "raw")
      try Qemu.io(mid, format: "qed", ["write -P 0x22 1M 2M", "write -z 4M 1M"])
      let top = s.file("top.qcow2")
      try Qemu.create(top, size: "12M", backing: "mid.qed", backingFormat: "qed")
      try Qemu.io(top, ["write -P 0x33 2M 2M"])
      return top
    },
    formatFixture("qcow", []),
    Fixture(name: "qcow compressed clusters", format: "qcow") { s in
      let src = s.file("src.qcow2")
      try Qemu.create(src, size: "12M")
      try Qemu.scatterPatterns(src, size: 12 << 20, count: 40, seed: 24, unit: 4096, maxUnits: 64)
      let img = s.file("c.qcow")
      // QEMU 7.2 exits 1 after writing a correct compressed qcow v1: compare instead.
      _ = try run("qemu-img", ["convert", "-c", "-O", "qcow", src, img], check: false)
      try Qemu.img("compare", "-f", "qcow2", "-F", "qcow", src, img)
      return img
    },
    formatFixture("parallels", ["cluster_size=64k"]),
    formatFixture("qcow2", ["compression_type=zstd"]),
    Fixture(name: "qcow2 zstd-compressed clusters", format: "qcow2") { s in
      let src = s.file("src.qcow2")
      try Qemu.create(src, size: "12M")
      try Qemu.scatterPatterns(src, size: 12 << 20, count: 40, seed: 23, unit: 4096, maxUnits: 64)
      let img = s.file("z.qcow2")
      try Qemu.img("convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", src, img)
      return img
    },
    Fixture(name: "qcow2 over vmdk over vmdk", format: "qcow2") { s in
      let base = s.file("base.vmdk")
      try Qemu.create(base, format: "vmdk", size: "12M")
      try Qemu.io(base, format: "vmdk", ["write -P 0x11 0 12M"])
      let mid = s.file("mid.vmdk")
      try Qemu.create(mid, format: "vmdk", size: "12M", backing: "base.vmdk", backingFormat: "vmdk")
      try Qemu.io(mid, format: "vmdk", ["write -P 0x22 1M 2M"])
      let top = s.file("top.qcow2")
      try Qemu.create(top, size: "12M", backing: mid, backingFormat: "vmdk")
      try Qemu.io(top, ["write -P 0x33 2M 2M"])
      return top
    },
  ]

  static let fixtures: [Fixture] = [
    Fixture(name: "qcow2 64k v3") { s in
      let img = s.file("a.qcow2")
      try Qemu.create(img, size: "24M")
      try Qemu.scatterPatterns(img, size: 24 << 20, count: 60, seed: 1, unit: 4096, maxUnits: 40)
      return img
    },
    Fixture(name: "qcow2 512 B clusters, compat 0.10") { s in
      let img = s.file("a.qcow2")
      try Qemu.create(img, size: "5M", options: ["cluster_size=512", "compat=0.10"])
      try Qemu.scatterPatterns(img, size: 5 << 20, count: 80, seed: 2)
      return img
    },
    Fixture(name: "qcow2 2M clusters, odd size") { s in
      let img = s.file("a.qcow2")
      try Qemu.create(img, size: "9437697", options: ["cluster_size=2M"])
      try Qemu.scatterPatterns(img, size: 9_437_697, count: 30, seed: 3)
      return img
    },
    Fixture(name: "qcow2 compressed, zero clusters") { s in
      let src = s.file("src.qcow2")
      try Qemu.create(src, size: "16M")
      try Qemu.scatterPatterns(src, size: 16 << 20, count: 50, seed: 4, unit: 4096, maxUnits: 64)
      let img = s.file("c.qcow2")
      try Qemu.img("convert", "-c", "-O", "qcow2", src, img)
      try Qemu.io(img, ["write -z 0 128k", "write -z 8M 64k", "write -P 0x77 12M 4k"])
      return img
    },
    Fixture(name: "chain qcow2 → qcow2 → raw, relative names, smaller backing") { s in
      let dir = try s.directory("base")
      try run("truncate", ["-s", "6M", dir + "/bottom.raw"])
      try Qemu.io(dir + "/bottom.raw", format: "raw", ["write -P 0x11 0 6M", "write -P 0x12 1M 100k"])
      try Qemu.create(dir + "/mid.qcow2", size: "10M", backing: "bottom.raw", backingFormat: "raw")
      try Qemu.io(dir + "/mid.qcow2", ["write -P 0x21 2M 300k", "write -z 5M 64k"])
      let img = s.file("top.qcow2")
      try Qemu.create(img, size: "16M", backing: "base/mid.qcow2", backingFormat: "qcow2")
      try Qemu.io(img, ["write -P 0x31 3M 70k", "write -P 0x32 9M 2M", "write -z 0 4k"])
      return img
    },
    Fixture(name: "qcow2 4k clusters, zero clusters with and without a host offset") { s in
      let img = s.file("z.qcow2")
      try Qemu.create(img, size: "8M", options: ["cluster_size=4096"])
      try Qemu.scatterPatterns(img, size: 8 << 20, count: 60, seed: 7, unit: 4096, maxUnits: 16)
      // On allocated clusters (the offset stays), on unallocated ones, and with unmap.
      try Qemu.io(
        img, ["write -P 0x44 1M 256k", "write -z 1M 64k", "write -z 6M 64k", "write -z -u 1088k 32k"])
      return img
    },
    Fixture(name: "qcow2 extended L2 over a backing file, partial subclusters") { s in
      let base = s.file("base.qcow2")
      try Qemu.create(base, size: "8M")
      try Qemu.io(base, ["write -P 0x51 0 8M"])
      let img = s.file("x.qcow2")
      try Qemu.create(
        img, size: "8M", options: ["extended_l2=on", "cluster_size=128k"], backing: base,
        backingFormat: "qcow2")
      try Qemu.io(
        img, ["write -P 0x52 4k 4k", "write -P 0x53 130k 9k", "write -z 200k 8k", "write -P 0x54 1M 300k"])
      return img
    },
    Fixture(name: "qcow2 external data file") { s in
      let img = s.file("e.qcow2")
      try Qemu.create(img, size: "6M", options: ["data_file=\(s.file("e.data"))"])
      try Qemu.scatterPatterns(img, size: 6 << 20, count: 40, seed: 8)
      return img
    },
    Fixture(name: "qcow2 external raw data file") { s in
      let img = s.file("e.qcow2")
      try Qemu.create(img, size: "6M", options: ["data_file=\(s.file("e.data"))", "data_file_raw=on"])
      try Qemu.scatterPatterns(img, size: 6 << 20, count: 40, seed: 9)
      return img
    },
    Fixture(name: "raw") { s in
      let img = s.file("disk.img")
      try run("truncate", ["-s", "7M", img])
      try Qemu.scatterPatterns(img, format: "raw", size: 7 << 20, count: 40, seed: 6)
      return img
    },
  ]

  @Test(arguments: fixtures)
  func diskRawEqualsQemuConvert(_ fixture: Fixture) throws {
    try Self.check(fixture)
  }

  @Test(arguments: formatFixtures)
  func otherFormatsEqualQemuConvert(_ fixture: Fixture) throws {
    try Self.check(fixture)
  }

  /// The copy path (`nosplice`) and a chosen read-ahead serve the same bytes; the read-ahead
  /// reaches the mount's bdi.
  @Test func copyRepliesAndReadAheadOption() throws {
    let scratch = try Scratch("e2e-opts")
    defer { scratch.remove() }
    let image = try Self.fixtures[0].make(scratch)
    let oracle = try Qemu.rawFile(of: image, format: Self.fixtures[0].format, scratch: scratch)
    let mounted = try MountedImage.mount(image, in: scratch, ["-o", "ro,nosplice,read_ahead_kb=256"])
    defer { mounted.unmount() }
    #expect(try compareFiles(mounted.diskRaw, oracle) == nil)
    let ddCopy = scratch.file("dd.raw")
    try run("dd", ["if=\(mounted.diskRaw)", "of=\(ddCopy)", "bs=1M", "status=none"])
    #expect(try compareFiles(ddCopy, oracle) == nil)
    #expect(try mountReadAheadKilobytes(mounted.mountpoint) == 256)
  }

  static func check(_ fixture: Fixture) throws {
    let scratch = try Scratch("e2e")
    defer { scratch.remove() }
    let image = try fixture.make(scratch)
    let oracle = try Qemu.rawFile(of: image, format: fixture.format, scratch: scratch)
    let mounted = try MountedImage.mount(image, in: scratch)
    defer { mounted.unmount() }
    let st = try statFile(mounted.diskRaw)
    #expect(UInt64(st.st_size) == UInt64(try statFile(oracle).st_size))
    #expect(st.st_mode & 0o777 == 0o444)
    #expect(try compareFiles(mounted.diskRaw, oracle) == nil)
    // 1 MiB reads as well as the kernel's own read sizes, and O_DIRECT reads (direct I/O opens).
    let ddCopy = scratch.file("dd.raw")
    try run("dd", ["if=\(mounted.diskRaw)", "of=\(ddCopy)", "bs=1M", "status=none"])
    #expect(try compareFiles(ddCopy, oracle) == nil)
    let directCopy = scratch.file("direct.raw")
    try run("dd", ["if=\(mounted.diskRaw)", "of=\(directCopy)", "bs=192k", "iflag=direct", "status=none"])
    #expect(try compareFiles(directCopy, oracle) == nil)
  }
}
