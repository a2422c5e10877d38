import Appliance
import Foundation
import TestSupport
import Testing
import VDiskCore

/// Hostile appliances: every fault is one clear `VDiskError`, never a crash or a huge allocation.
@Suite struct ApplianceHostileTests {
  /// A ustar header for `name` of `size` bytes (octal), its checksum right unless `badChecksum`.
  static func header(_ name: String, size: UInt64, type: UInt8 = 0x30, badChecksum: Bool = false) -> [UInt8] {
    var h = [UInt8](repeating: 0, count: 512)
    h.replaceSubrange(0..<name.utf8.count, with: name.utf8)
    let octal = Array(String(size, radix: 8).utf8)
    let field = [UInt8](repeating: 0x30, count: 11 - octal.count) + octal
    h.replaceSubrange(124..<135, with: field)
    h[156] = type
    h.replaceSubrange(257..<263, with: Array("ustar\0".utf8))
    h.replaceSubrange(263..<265, with: Array("00".utf8))
    for i in 148..<156 { h[i] = 0x20 }
    var sum = h.reduce(0) { $0 + Int($1) }
    if badChecksum { sum += 1 }
    let digits = Array(String(sum, radix: 8).utf8)
    h.replaceSubrange(148..<155, with: [UInt8](repeating: 0x30, count: 6 - digits.count) + digits + [0])
    return h
  }

  static func index(_ bytes: [UInt8]) throws -> [TarMember] {
    try TarIndex.read(try ImageFile(source: MemorySource(bytes), path: "hostile.ova", isWritable: false))
  }

  static func expectCorrupt(_ bytes: [UInt8], _ fragment: String) {
    do {
      _ = try index(bytes)
      Issue.record("accepted: \(fragment)")
    } catch let error as VDiskError {
      #expect(error.kind == .corrupt || error.kind == .unsupported, "\(error)")
      #expect(error.description.contains(fragment), "\(error)")
    } catch {
      Issue.record("unexpected \(error)")
    }
  }

  @Test func tarHeadersAreChecked() throws {
    let body = [UInt8](repeating: 7, count: 512)
    let end = [UInt8](repeating: 0, count: 1024)
    // A good archive reads.
    #expect(
      try Self.index(Self.header("a.ovf", size: 512) + body + end) == [
        TarMember(name: "a.ovf", offset: 512, size: 512)
      ])
    Self.expectCorrupt(Self.header("a.ovf", size: 512, badChecksum: true) + body + end, "bad checksum")
    Self.expectCorrupt(Self.header("a.ovf", size: 0o77777777777) + body + end, "past the end")
    // base-256 size past the end.
    var huge = Self.header("a.ovf", size: 0)
    huge.replaceSubrange(124..<136, with: [0x80, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
    for i in 148..<156 { huge[i] = 0x20 }
    let digits = Array(String(huge.reduce(0) { $0 + Int($1) }, radix: 8).utf8)
    huge.replaceSubrange(148..<155, with: [UInt8](repeating: 0x30, count: 6 - digits.count) + digits + [0])
    Self.expectCorrupt(huge + body + end, "past the end")
    // A size field that is not octal.
    var garbled = Self.header("a.ovf", size: 512)
    garbled[125] = UInt8(ascii: "9")
    for i in 148..<156 { garbled[i] = 0x20 }
    let sum = Array(String(garbled.reduce(0) { $0 + Int($1) }, radix: 8).utf8)
    garbled.replaceSubrange(148..<155, with: [UInt8](repeating: 0x30, count: 6 - sum.count) + sum + [0])
    Self.expectCorrupt(garbled + body + end, "malformed size")
    // A pax header far larger than any name: refused before it is read.
    Self.expectCorrupt(
      Self.header("pax", size: 2 << 20, type: UInt8(ascii: "x")) + [UInt8](repeating: 0, count: 2 << 20)
        + end,
      "more than 1 MiB")
    // Malformed pax records.
    let pax = Array("99 path=x\n".utf8) + [UInt8](repeating: 0, count: 502)
    Self.expectCorrupt(Self.header("pax", size: 512, type: UInt8(ascii: "x")) + pax + end, "pax record")
  }

  /// `header` with bytes changed at `edits` and its checksum made right again.
  static func edited(_ header: [UInt8], _ edits: [Int: [UInt8]]) -> [UInt8] {
    var h = header
    for (at, bytes) in edits { h.replaceSubrange(at..<at + bytes.count, with: bytes) }
    for i in 148..<156 { h[i] = 0x20 }
    let digits = Array(String(h.reduce(0) { $0 + Int($1) }, radix: 8).utf8)
    h.replaceSubrange(148..<155, with: [UInt8](repeating: 0x30, count: 6 - digits.count) + digits + [0])
    return h
  }

  /// Link names (ustar `linkname`, GNU `K` long link names) and old GNU sparse headers, whose
  /// extension headers are stepped over, bounded by the archive.
  @Test func linkAndSparseHeaders() throws {
    let body = [UInt8](repeating: 7, count: 512)
    let end = [UInt8](repeating: 0, count: 1024)
    let link = Self.edited(Self.header("b.img", size: 0, type: UInt8(ascii: "1")), [157: Array("a.img".utf8)])
    let long = String(repeating: "t", count: 300)
    let longLink =
      Self.header("././@LongLink", size: UInt64(long.utf8.count + 1), type: UInt8(ascii: "K"))
      + Array(long.utf8) + [UInt8](repeating: 0, count: 512 - (long.utf8.count + 1) % 512 + 1)
    #expect(
      try Self.index(Self.header("a.img", size: 512) + body + link + longLink + link + end) == [
        TarMember(name: "a.img", offset: 512, size: 512),
        TarMember(name: "b.img", offset: 1536, size: 0, kind: .hardLink(target: "a.img")),
        TarMember(name: "b.img", offset: 2560 + 512, size: 0, kind: .hardLink(target: long)),
      ])
    // 'S' with one extension header (its own flag clear): the data and the next member after it.
    let sparse = Self.edited(Self.header("s.img", size: 512, type: UInt8(ascii: "S")), [482: [1]])
    let extensionBlock = [UInt8](repeating: 0, count: 512)
    #expect(
      try Self.index(sparse + extensionBlock + body + Self.header("n", size: 512) + body + end) == [
        TarMember(name: "s.img", offset: 1024, size: 512, kind: .gnuSparse),
        TarMember(name: "n", offset: 2048, size: 512),
      ])
    // Extension headers that never end run past the archive: refused, not looped on.
    var endless = extensionBlock
    endless[504] = 1
    Self.expectCorrupt(sparse + endless + endless + endless, "extension headers past the end")
    Self.expectCorrupt(sparse, "extension headers past the end")
  }

  @Test func randomTarBytesNeverCrash() {
    var rng = SystemRandomNumberGenerator()
    let seed =
      Self.header("a.ovf", size: 700) + [UInt8](repeating: 1, count: 1024) + Self.header("b", size: 0)
    for _ in 0..<2000 {
      var bytes = seed
      for _ in 0..<4 {
        bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
      }
      _ = try? Self.index(bytes)
    }
  }

  /// Writes `ovf` and `files` into a fresh directory, tars them (descriptor first) and opens it.
  static func open(_ ovf: String, files: [String: [UInt8]] = [:], scratch: Scratch) throws -> Appliance {
    let directory = try scratch.directory("d\(UUID().uuidString.prefix(6))")
    try ovf.write(toFile: directory + "/x.ovf", atomically: true, encoding: .utf8)
    for (name, bytes) in files { try Data(bytes).write(to: URL(fileURLWithPath: directory + "/" + name)) }
    let ova = directory + ".ova"
    try run("tar", ["-C", directory, "-cf", ova, "x.ovf"] + files.keys.sorted())
    return try Appliance(path: ova, logger: testLogger)
  }

  static func expectRefused(
    _ ovf: String, files: [String: [UInt8]] = [:], scratch: Scratch, _ fragment: String,
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    do {
      _ = try open(ovf, files: files, scratch: scratch)
      Issue.record("accepted: \(fragment)", sourceLocation: sourceLocation)
    } catch {
      #expect(error is VDiskError, "\(error)", sourceLocation: sourceLocation)
      #expect("\(error)".contains(fragment), "\(error)", sourceLocation: sourceLocation)
    }
  }

  @Test func hostileDescriptorsAreRefused() throws {
    let scratch = try Scratch("ova-hostile")
    defer { scratch.remove() }
    let disk = [UInt8](repeating: 0, count: 4096)
    func ovf(href: String, compression: String = "") -> String {
      ApplianceFixture.ovf(
        [(href, 4096, 4096)],
        extraFileAttributes: compression.isEmpty ? "" : " ovf:compression=\"\(compression)\"")
    }
    // Names outside the appliance.
    for href in ["../x.img", "/etc/passwd", "a/../../x", "http://example.com/disk.vmdk", "./disk.img"] {
      Self.expectRefused(
        ovf(href: href), files: ["disk.img": disk], scratch: scratch, "not a plain relative name")
    }
    // A disk file the archive does not hold; a fileRef <References> does not list.
    Self.expectRefused(ovf(href: "missing.vmdk"), scratch: scratch, "is not in the appliance")
    Self.expectRefused(
      ovf(href: "disk.img").replacingOccurrences(of: "ovf:fileRef=\"file1\"", with: "ovf:fileRef=\"nope\""),
      files: ["disk.img": disk], scratch: scratch, "does not list")
    // gzip members: refused with a clear message.
    Self.expectRefused(
      ovf(href: "disk.img", compression: "gzip"), files: ["disk.img": disk], scratch: scratch, "gzip")
    // A size the descriptor states differently.
    Self.expectRefused(
      ovf(href: "disk.img").replacingOccurrences(of: "ovf:size=\"4096\"", with: "ovf:size=\"99\""),
      files: ["disk.img": disk], scratch: scratch, "descriptor says 99")
    // XML bombs: no DTD, so no entity expands.
    let bomb = """
      <?xml version="1.0"?>
      <!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
      <Envelope><References><File ovf:href="&lol2;" ovf:id="f"/></References></Envelope>
      """
    Self.expectRefused(bomb, scratch: scratch, "OVF descriptor")
    // Deep nesting.
    let deep =
      "<Envelope>" + String(repeating: "<a>", count: 10_000) + String(repeating: "</a>", count: 10_000)
      + "</Envelope>"
    Self.expectRefused(deep, scratch: scratch, "OVF descriptor")
    // Not an OVF; a capacity that overflows.
    Self.expectRefused("<Other/>", scratch: scratch, "not <Envelope>")
    Self.expectRefused(
      ovf(href: "disk.img").replacingOccurrences(
        of: "ovf:capacity=\"4096\"", with: "ovf:capacity=\"99999999999999999999\""),
      files: ["disk.img": disk], scratch: scratch, "capacity")
    // A disk whose bytes are no image at all still opens only as what the registry probes (raw).
    let plain = try Self.open(ovf(href: "disk.img"), files: ["disk.img": disk], scratch: scratch)
    #expect(try plain.disks[0].open(logger: testLogger).top.formatName == "raw")
  }
}
