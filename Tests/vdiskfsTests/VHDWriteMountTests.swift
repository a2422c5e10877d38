import Foundation
import TestSupport
import Testing

/// vpc (VHD) images written through a real mount, with the shared `WriteMountRuns`: fixed and
/// dynamic judged by QEMU (`qemu-img check` does not support vpc: `qemu-img convert` must succeed
/// and `qemu-img compare` find the mirror), differencing (QEMU cannot open the chain) read back
/// through a read-only vdiskfs mount, with the parent unchanged and the child's footers and BAT
/// checked here.
@Suite(.enabled(if: mountTestsEnabled)) struct VHDWriteMountTests {
  enum Kind: String, CaseIterable, Sendable { case fixed, dynamic, differencing }

  static let size = "48M"

  /// An image of `kind` with qemu-written data; the parent too for a differencing disk.
  static func makeImage(_ kind: Kind, in scratch: Scratch) throws -> (image: String, parent: String?) {
    let image = scratch.file("\(kind.rawValue).vhd")
    let data = ["write -P 0x31 0 3M", "write -P 0x32 9M 5M", "write -P 0x33 40M 1536k"]
    switch kind {
    case .fixed, .dynamic:
      try Qemu.create(image, format: "vpc", size: size, options: ["subformat=\(kind.rawValue)"])
      try Qemu.io(image, format: "vpc", data)
      return (image, nil)
    case .differencing:
      let parent = scratch.file("parent.vhd")
      try Qemu.create(parent, format: "vpc", size: size)
      try Qemu.io(parent, format: "vpc", data)
      try Qemu.create(image, format: "vpc", size: size)
      try makeDifferencing(image, over: parent)
      try Qemu.io(image, format: "vpc", ["write -P 0x34 2M 2M"])
      return (image, parent)
    }
  }

  /// Turns the empty dynamic disk `child` into a differencing disk over `parent` (vhd.asciidoc,
  /// "Dynamic disk header"): disk type 4 in both footers, the parent's unique id and its name
  /// (found next to the child: no locators needed), checksums refreshed.
  static func makeDifferencing(_ child: String, over parent: String) throws {
    let parentEnd = try fileSize(parent) - 512
    let uuid = try bytes(parent, at: parentEnd + 68, count: 16)
    let end = try fileSize(child) - 512
    for footer in [0, end] {
      try patch(child, at: footer + 60, 4, width: 4)
      try refreshChecksum(child, at: footer, size: 512, field: 64)
    }
    let name = Array("parent.vhd".utf16).flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    try patch(child, at: 512 + 40, bytes: uuid)
    try patch(child, at: 512 + 64, bytes: name)
    try refreshChecksum(child, at: 512, size: 1024, field: 36)
  }

  static func fileSize(_ path: String) throws -> UInt64 { UInt64(try statFile(path).st_size) }

  static func bytes(_ path: String, at offset: UInt64, count: Int) throws -> [UInt8] {
    let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    try handle.seek(toOffset: offset)
    return [UInt8](try handle.read(upToCount: count) ?? Data())
  }

  /// The VHD checksum (one's complement of the byte sum, the field counted as zero) of the
  /// structure of `size` bytes at `offset`, written into its 4-byte field at `field`.
  static func refreshChecksum(_ path: String, at offset: UInt64, size: Int, field: Int) throws {
    var structure = try bytes(path, at: offset, count: size)
    structure.replaceSubrange(field..<field + 4, with: [0, 0, 0, 0])
    let sum = structure.reduce(UInt32(0)) { $0 &+ UInt32($1) }
    try patch(path, at: offset + UInt64(field), UInt64(~sum), width: 4)
  }

  /// The child's layout as the writer must leave it (QEMU cannot judge it): valid footers at the
  /// end and at 0, equal; every BAT entry a whole block between the BAT and the footer; no two
  /// blocks overlapping.
  static func expectSoundLayout(_ image: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    for problem in try layoutProblems(image) {
      Issue.record(Comment(rawValue: problem), sourceLocation: sourceLocation)
    }
  }

  /// What `expectSoundLayout` finds wrong (none: the layout is sound).
  static func layoutProblems(_ image: String) throws -> [String] {
    var problems: [String] = []
    let size = try fileSize(image)
    let end = try bytes(image, at: size - 512, count: 512)
    if Array(end[0..<8]) != Array("conectix".utf8) { problems.append("no footer at the end") }
    if try bytes(image, at: 0, count: 512) != end { problems.append("footer copy differs") }
    var zeroed = end
    zeroed.replaceSubrange(64..<68, with: [0, 0, 0, 0])
    let sum = ~zeroed.reduce(UInt32(0)) { $0 &+ UInt32($1) }
    if end[64..<68].reduce(UInt32(0), { $0 << 8 | UInt32($1) }) != sum { problems.append("footer checksum") }
    let bat = try field(image, at: 512 + 16, width: 8)
    let entries = try field(image, at: 512 + 28, width: 4)
    let blockSize = try field(image, at: 512 + 32, width: 4)
    let table = try bytes(image, at: bat, count: Int(entries) * 4)
    var blocks: [(UInt64, UInt64)] = []
    for i in 0..<Int(entries) {
      let entry = table[i * 4..<i * 4 + 4].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
      guard entry != 0xFFFF_FFFF else { continue }
      let start = entry * 512
      let stop = start + 512 + blockSize
      if start < bat + entries * 4 || stop > size - 512 { problems.append("block \(i) at \(start)") }
      blocks.append((start, stop))
    }
    blocks.sort { $0.0 < $1.0 }
    for (a, b) in zip(blocks, blocks.dropFirst()) where b.0 < a.1 {
      problems.append("blocks at \(a.0) and \(b.0) overlap")
    }
    return problems
  }

  /// A read-write mount of a vpc image is read-write: no "not supported" notice, a writable
  /// disk.raw; `truncate` is refused (qemu-img resize refuses vpc too) and changes nothing.
  @Test(arguments: Kind.allCases)
  func mountsReadWriteWithoutANotice(_ kind: Kind) throws {
    let scratch = try Scratch("vpc-wmount-rw")
    defer { scratch.remove() }
    let (image, _) = try Self.makeImage(kind, in: scratch)
    let mnt = try scratch.directory("mnt")
    let r = try run("timeout", ["60", vdiskfsBinary, image, mnt])
    var mounted = true
    defer { if mounted { _ = try? run("fusermount3", ["-u", "-z", mnt], check: false) } }
    #expect(!r.stderr.contains("not supported"), "\(r.stderr)")
    #expect(!r.stderr.contains("read-only"), "\(r.stderr)")
    let disk = mnt + "/disk.raw"
    #expect(try statFile(disk).st_mode & 0o200 != 0)
    let size = try statFile(disk).st_size
    let grow = try run("truncate", ["-s", "\(size + (1 << 20))", disk], check: false)
    #expect(grow.status != 0 && grow.stderr.contains("not supported"), "\(grow.stderr)")
    let file = try PositionalFile(disk)
    try file.write([0x5A], at: 12345)
    try file.sync()
    file.close()
    try unmountRetryingWhileBusy(mnt)
    mounted = false
    for _ in 0..<50 where isMounted(mnt) { usleep(20_000) }
    waitForDaemonExit(mnt)
    let content = try [UInt8](
      Data(contentsOf: URL(fileURLWithPath: Qemu.rawFile(of: image, format: "vpc", scratch: scratch))))
    try #require(content.count == Int(size))
    #expect(content[12344] != 0x5A && content[12345] == 0x5A)
  }

  /// Who reads the image for the harness: qemu for a dynamic disk; vdiskfs for a differencing
  /// one (qemu cannot open the chain) and for a fixed one (qemu, asked without a format, probes a
  /// fixed VHD as raw: the footer is only at its end), which `expectQemuReadsLikeVdiskfs` then
  /// compares with qemu asked for vpc.
  static func reader(_ kind: Kind) -> WriteMountRuns.Reader { kind == .dynamic ? .qemu : .vdiskfs }

  /// `qemu-img convert -f vpc` of `image` equals a read-only vdiskfs mount of it.
  static func expectQemuReadsLikeVdiskfs(
    _ image: String, scratch: Scratch, sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let raw = try Qemu.rawFile(of: image, format: "vpc", scratch: scratch)
    let mounted = try MountedImage.mount(image, in: scratch)
    defer { mounted.unmount() }
    #expect(try compareFiles(mounted.diskRaw, raw) == nil, sourceLocation: sourceLocation)
  }

  @Test(arguments: Kind.allCases)
  func differentialRun(_ kind: Kind) throws {
    for seed: UInt64 in [1, 2] {
      let scratch = try Scratch("vpc-wmount")
      defer { scratch.remove() }
      let (image, parent) = try Self.makeImage(kind, in: scratch)
      // Judged here, not by the harness's `.convertOnly` (a conversion to /dev/null, which
      // qemu-img 7.2 refuses: "Cannot grow device files"): the harness's qemu reader already
      // runs `qemu-img compare` on a dynamic disk; a fixed one is converted as vpc and compared.
      try WriteMountRuns.differential(
        image: image, scratch: scratch, seed: seed, judge: .none, reader: Self.reader(kind),
        unchanged: parent.map { [$0] } ?? [])
      switch kind {
      case .fixed: try Self.expectQemuReadsLikeVdiskfs(image, scratch: scratch)
      case .dynamic: try Self.expectSoundLayout(image)
      case .differencing: try Self.expectSoundLayout(image)
      }
    }
  }

  @Test(arguments: Kind.allCases)
  func killedMidWrite(_ kind: Kind) throws {
    for seed: UInt64 in [11, 12, 13] {
      let scratch = try Scratch("vpc-wcrash")
      defer { scratch.remove() }
      let (image, parent) = try Self.makeImage(kind, in: scratch)
      let sum = try parent.map(WriteMountRuns.fileChecksum)
      try WriteMountRuns.crash(
        image: image, scratch: scratch, seed: seed, reader: Self.reader(kind),
        afterCrash: { image in
          // qemu opens and converts it (vpc has no qemu-img check), and the layout is sound.
          let raw = try Qemu.rawFile(of: image, format: "vpc", scratch: scratch)
          try FileManager.default.removeItem(atPath: raw)
          if kind != .fixed { try Self.expectSoundLayout(image) }
        })
      if let parent { #expect(try WriteMountRuns.fileChecksum(parent) == sum) }
      if kind == .fixed { try Self.expectQemuReadsLikeVdiskfs(image, scratch: scratch) }
    }
  }
}

extension VHDWriteMountTests {
  /// mkfs.ext4, files, deletes and fstrim on a dynamic VHD: e2fsck clean and every file intact
  /// afterwards. VHD cannot free blocks, so fstrim only writes zeros into allocated blocks.
  @Test func ext4WorkloadOnADynamicVHD() throws {
    let scratch = try Scratch("vpc-wext4")
    defer { scratch.remove() }
    let image = scratch.file("fs.vhd")
    try Qemu.create(image, format: "vpc", size: "160M", options: ["force_size=on"])
    // The harness converts the image for e2fsck (qemu opens it), so no judge of its own.
    try WriteMountRuns.ext4(image: image, scratch: scratch, judge: .none, expectTrimmed: false)
    try Self.expectSoundLayout(image)
  }
}
