import Foundation
import TestSupport
import Testing

/// `vdiskfs map` and the snapshot list of `vdiskfs info`, through the binary, against qemu-img.
@Suite struct MapAndInfoTests {
  /// A JSON scalar, enough for qemu-img's map and snapshot output.
  enum JSONValue: Decodable, Equatable, CustomStringConvertible {
    case int(Int64), bool(Bool), string(String)

    init(from decoder: Decoder) throws {
      let c = try decoder.singleValueContainer()
      if let b = try? c.decode(Bool.self) {
        self = .bool(b)
      } else if let n = try? c.decode(Int64.self) {
        self = .int(n)
      } else {
        self = .string(try c.decode(String.self))
      }
    }

    var description: String {
      switch self {
      case .int(let n): "\(n)"
      case .bool(let b): "\(b)"
      case .string(let s): "\"\(s)\""
      }
    }
  }

  typealias Object = [String: JSONValue]

  static func objects(_ json: String) throws -> [Object] {
    try JSONDecoder().decode([Object].self, from: Data(json.utf8))
  }

  /// Requires `vdiskfs map --output json` to equal `qemu-img map --output=json` entry by entry
  /// (same keys, same values), and the human output to equal qemu-img's unless qemu-img refuses.
  /// Runs a command in `directory`: qemu-img 7.2 makes and opens an external data file relative
  /// to its working directory (and the process-wide one is not ours to change).
  @discardableResult
  static func inDirectory(_ directory: String, _ arguments: [String], check: Bool = true) throws
    -> CommandResult
  {
    try run("bash", ["-c", "cd \"$0\" && exec \"$@\"", directory] + arguments, check: check)
  }

  func expectSameMap(_ image: String, in directory: String, sourceLocation: SourceLocation = #_sourceLocation)
    throws
  {
    func inDirectory(_ arguments: [String], check: Bool = true) throws -> CommandResult {
      try Self.inDirectory(directory, arguments, check: check)
    }
    let ours = try inDirectory([vdiskfsBinary, "map", "--output", "json", image]).stdout
    let theirs = try inDirectory(["qemu-img", "map", "--output=json", image]).stdout
    let a = try Self.objects(ours)
    let b = try Self.objects(theirs)
    #expect(
      a.count == b.count, "\(image): \(a.count) entries, qemu-img \(b.count)", sourceLocation: sourceLocation)
    for (index, (x, y)) in zip(a, b).enumerated() where x != y {
      Issue.record("\(image) entry \(index): \(x) vs qemu-img \(y)", sourceLocation: sourceLocation)
      break
    }
    #expect(ours == theirs, sourceLocation: sourceLocation)
    let human = try inDirectory([vdiskfsBinary, "map", image], check: false)
    let qemuHuman = try inDirectory(["qemu-img", "map", image], check: false)
    #expect(human.stdout == qemuHuman.stdout, "\(image)", sourceLocation: sourceLocation)
    #expect(human.status == qemuHuman.status, "\(image)", sourceLocation: sourceLocation)
  }

  @Test func mapEqualsQemuImgMap() throws {
    let scratch = try Scratch("map")
    defer { scratch.remove() }
    func path(_ name: String) -> String { scratch.file(name) }

    // Plain, with zero clusters: plain, keeping their host cluster, unmapped.
    try Qemu.create(path("plain.qcow2"), size: "4M")
    try Qemu.io(
      path("plain.qcow2"),
      ["write -P 1 0 1M", "write -z 64k 64k", "write -z -u 128k 64k", "write -z 2M 64k", "write -P 2 3M 4k"])
    // qcow2 → qcow2 → raw (holes in the raw file are zeros with offsets).
    try Qemu.create(path("base.raw"), format: "raw", size: "4M")
    try Qemu.io(path("base.raw"), format: "raw", ["write -P 0x11 0 1M", "write -P 0x12 3M 64k"])
    try Qemu.create(path("mid.qcow2"), size: "4M", backing: "base.raw", backingFormat: "raw")
    try Qemu.io(path("mid.qcow2"), ["write -P 0x21 512k 1M", "write -z 2M 128k"])
    try Qemu.create(path("top.qcow2"), size: "4M", backing: "mid.qcow2", backingFormat: "qcow2")
    try Qemu.io(path("top.qcow2"), ["write -P 0x31 1M 64k", "write -z 0 64k"])
    // Compressed clusters (qemu-img's human map refuses them).
    try Qemu.create(path("compressed.qcow2"), size: "1M")
    try Qemu.io(
      path("compressed.qcow2"), ["write -c -P 5 0 64k", "write -c -P 6 64k 64k", "write -P 7 128k 64k"])
    // External data files, plain and raw.
    let dir = scratch.path
    try Self.inDirectory(
      dir, ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=data.raw", "data.qcow2", "1M"])
    try Self.inDirectory(dir, ["qemu-io", "-c", "write -P 1 0 64k", "-c", "write -z 128k 64k", "data.qcow2"])
    try Self.inDirectory(
      dir,
      [
        "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=rawdata.raw,data_file_raw=on",
        "rawdata.qcow2", "1M",
      ])
    try Self.inDirectory(dir, ["qemu-io", "-c", "write -P 1 0 64k", "rawdata.qcow2"])
    // Subclusters, alone and over a backing file shorter than the overlay.
    try Qemu.create(path("sub.qcow2"), size: "1M", options: ["extended_l2=on"])
    try Qemu.io(path("sub.qcow2"), ["write -P 1 0 4k", "write -z 8k 4k", "write -P 2 64k 64k"])
    try Qemu.create(path("short.qcow2"), size: "1M")
    try Qemu.io(path("short.qcow2"), ["write -P 3 0 1M"])
    try Qemu.create(
      path("subover.qcow2"), size: "2M", options: ["extended_l2=on"], backing: "short.qcow2",
      backingFormat: "qcow2")
    try Qemu.io(path("subover.qcow2"), ["write -P 9 4k 4k", "write -z 12k 4k", "write -P 9 1040k 4k"])
    try Qemu.create(path("empty.qcow2"), size: "0")

    for name in [
      "plain.qcow2", "top.qcow2", "compressed.qcow2", "data.qcow2", "rawdata.qcow2", "sub.qcow2",
      "subover.qcow2",
      "empty.qcow2",
    ] {
      try expectSameMap(path(name), in: scratch.path)
    }
  }

  /// `--snapshot` maps a snapshot view: the same map qemu-img gives after `snapshot -a` on a copy
  /// (which makes the snapshot's L1 table active, its L2 tables and clusters unmoved).
  @Test func mapOfASnapshot() throws {
    let scratch = try Scratch("map-snapshot")
    defer { scratch.remove() }
    let image = scratch.file("snap.qcow2")
    try Qemu.create(image, size: "4M")
    try Qemu.io(image, ["write -P 1 0 1M", "write -c -P 2 2M 64k"])
    try Qemu.img("snapshot", "-c", "first", image)
    try Qemu.io(image, ["write -P 3 512k 1M", "write -z 3M 64k"])
    try Qemu.img("resize", image, "6M")
    try Qemu.img("snapshot", "-c", "1", image)
    try Qemu.io(image, ["write -P 4 0 4M"])
    // A name wins over an ID: "1" is the snapshot named "1" (ID 2), not ID 1 ("first"). The
    // copies are applied by ID-or-name as qemu-img resolves them (ID first).
    for (selector, applied) in [("first", "first"), ("1", "2"), ("2", "2")] {
      let copy = scratch.file("applied-\(selector).qcow2")
      try FileManager.default.copyItem(atPath: image, toPath: copy)
      try Qemu.img("snapshot", "-a", applied, copy)
      let ours = try Self.objects(
        try run(vdiskfsBinary, ["map", "--output", "json", "--snapshot", selector, image]).stdout)
      let theirs = try Self.objects(try run("qemu-img", ["map", "--output=json", copy]).stdout)
      #expect(ours == theirs, "\(selector)")
    }
    let missing = try run(vdiskfsBinary, ["map", "--snapshot", "nope", image], check: false)
    #expect(missing.status == 3)
    #expect(missing.stderr.contains("no snapshot named \"nope\""))
    let raw = scratch.file("plain.raw")
    try Qemu.create(raw, format: "raw", size: "1M")
    let unsupported = try run(vdiskfsBinary, ["map", "--snapshot", "x", raw], check: false)
    #expect(unsupported.status == 5)
  }

  @Test func infoListsSnapshotsLikeQemuImg() throws {
    let scratch = try Scratch("info-snapshots")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    let image = scratch.file("snap.qcow2")
    try Qemu.create(base, size: "4M")
    try Qemu.img("snapshot", "-c", "in the base", base)
    try Qemu.create(image, size: "4M", backing: "base.qcow2", backingFormat: "qcow2")
    try Qemu.io(image, ["write -P 1 0 1M"])
    try Qemu.img("snapshot", "-c", "s1", image)
    try Qemu.io(image, ["write -P 2 1M 1M"])
    try Qemu.img("snapshot", "-c", "a rather long snapshot name", image)

    struct Info: Decodable { var snapshots: [Object]? }
    for arguments in [[image], ["--backing-chain", image]] {
      let ours = try run(vdiskfsBinary, ["info", "--output", "json"] + arguments).stdout
      let theirs = try run("qemu-img", ["info", "--output=json"] + arguments).stdout
      if arguments.count == 1 {
        let a = try JSONDecoder().decode(Info.self, from: Data(ours.utf8)).snapshots
        let b = try JSONDecoder().decode(Info.self, from: Data(theirs.utf8)).snapshots
        #expect(a != nil && a == b)
      } else {
        let a = try JSONDecoder().decode([Info].self, from: Data(ours.utf8)).map(\.snapshots)
        let b = try JSONDecoder().decode([Info].self, from: Data(theirs.utf8)).map(\.snapshots)
        #expect(a.count == 2 && a == b)
      }
    }

    // The human list, line for line (both print local time).
    func snapshotLines(_ text: String) -> [Substring] {
      let lines = text.split(separator: "\n")
      guard let start = lines.firstIndex(of: "Snapshot list:") else { return [] }
      // (vdiskfs adds the snapshot directories the mount shows after qemu's table.)
      return Array(
        lines[start...].prefix { !$0.hasPrefix("Format specific") && !$0.hasPrefix("Snapshot directories") })
    }
    let ours = snapshotLines(try run(vdiskfsBinary, ["info", image]).stdout)
    #expect(ours.count == 4)
    #expect(ours == snapshotLines(try run("qemu-img", ["info", image]).stdout))
    #expect(ours == snapshotLines(try run("qemu-img", ["snapshot", "-l", image]).stdout))

    // No snapshots: no list, no key.
    let plain = scratch.file("plain.qcow2")
    try Qemu.create(plain, size: "1M")
    #expect(!(try run(vdiskfsBinary, ["info", "--output", "json", plain]).stdout.contains("\"snapshots\"")))
    #expect(!(try run(vdiskfsBinary, ["info", plain]).stdout.contains("Snapshot list")))
  }

  /// A broken snapshot table makes `info` fail as corrupt (exit 4) with the reason.
  @Test func infoOfACorruptSnapshotTable() throws {
    let scratch = try Scratch("info-corrupt-snapshots")
    defer { scratch.remove() }
    let image = scratch.file("snap.qcow2")
    try Qemu.create(image, size: "1M")
    try Qemu.img("snapshot", "-c", "s1", image)
    let table = try field(image, at: 64, width: 8)
    try patch(image, at: table + 36, 0xFFFF_FFFF, width: 4)
    let result = try run(vdiskfsBinary, ["info", image], check: false)
    #expect(result.status == 4)
    #expect(result.stderr.contains("extra data"))
  }
}
