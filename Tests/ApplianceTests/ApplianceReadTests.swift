import Appliance
import Foundation
import TestSupport
import Testing
import VDiskCore

/// Appliances made with qemu-img and tar: every disk read in place equals qemu's raw
/// conversion of its qcow2 source.
@Suite struct ApplianceReadTests {
  @Test func oneDiskOVAMatchesQemu() throws {
    let scratch = try Scratch("ova-one")
    defer { scratch.remove() }
    let source = try ApplianceFixture.disk("disk1.vmdk", size: 32 << 20, seed: 1, in: scratch)
    let ovf = ApplianceFixture.ovf([("disk1.vmdk", try ApplianceFixture.fileSize(source.vmdk), source.size)])
    try ovf.write(toFile: scratch.file("app.ovf"), atomically: true, encoding: .utf8)
    let ova = scratch.file("app.ova")
    try ApplianceFixture.tar(ova, directory: scratch.path, members: ["app.ovf", "disk1.vmdk"])

    let appliance = try Appliance(path: ova, logger: testLogger)
    #expect(appliance.descriptorName == "app.ovf")
    #expect(appliance.descriptorBytes == Array(ovf.utf8))
    #expect(appliance.disks.map(\.directoryName) == ["1-disk1.vmdk"])
    #expect(appliance.disks.first?.capacity == 32 << 20)
    #expect(appliance.disks.first?.file.source is WindowSource)  // read in place, not extracted
    #expect(try ApplianceFixture.disksMatch(appliance, [source]))
    #expect(try appliance.disks[0].open(logger: testLogger).top.formatName == "vmdk")
  }

  @Test func twoDiskOVAMatchesQemu() throws {
    let scratch = try Scratch("ova-two")
    defer { scratch.remove() }
    let a = try ApplianceFixture.disk("system.vmdk", size: 16 << 20, seed: 2, in: scratch)
    let b = try ApplianceFixture.disk("data.vmdk", size: 24 << 20, seed: 3, in: scratch)
    try ApplianceFixture.ovf([
      ("system.vmdk", try ApplianceFixture.fileSize(a.vmdk), a.size),
      ("data.vmdk", try ApplianceFixture.fileSize(b.vmdk), b.size),
    ]).write(toFile: scratch.file("two.ovf"), atomically: true, encoding: .utf8)
    let ova = scratch.file("two.ova")
    try ApplianceFixture.tar(ova, directory: scratch.path, members: ["two.ovf", "system.vmdk", "data.vmdk"])
    let appliance = try Appliance(path: ova, logger: testLogger)
    #expect(appliance.disks.map(\.directoryName) == ["1-system.vmdk", "2-data.vmdk"])
    #expect(try ApplianceFixture.disksMatch(appliance, [a, b]))
  }

  /// pax headers carry names longer than ustar's 100 + 155 bytes (`path` records).
  @Test func paxLongNamesMatchQemu() throws {
    let scratch = try Scratch("ova-pax")
    defer { scratch.remove() }
    let long = String(repeating: "very-long-disk-name-", count: 9) + "disk.vmdk"  // 189 bytes, no slash
    #expect(long.utf8.count > 100)
    let source = try ApplianceFixture.disk(long, size: 8 << 20, seed: 4, in: scratch)
    let ovfName = String(repeating: "appliance-", count: 12) + ".ovf"
    try ApplianceFixture.ovf([(long, try ApplianceFixture.fileSize(source.vmdk), source.size)])
      .write(toFile: scratch.file(ovfName), atomically: true, encoding: .utf8)
    for format in ["pax", "gnu"] {
      let ova = scratch.file("long-\(format).ova")
      try ApplianceFixture.tar(ova, directory: scratch.path, members: [ovfName, long], format: format)
      let appliance = try Appliance(path: ova, logger: testLogger)
      #expect(appliance.descriptorName == ovfName, "\(format)")
      #expect(appliance.disks.first?.href == long, "\(format)")
      #expect(try ApplianceFixture.disksMatch(appliance, [source]), "\(format)")
      let manifest = try #require(try appliance.manifest())
      #expect(try appliance.verify(manifest).isEmpty, "\(format)")
    }
  }

  /// ustar's `prefix` field holds the directories of a path longer than 100 bytes; members
  /// named "./x" (tar run on ".") are found by their plain names.
  @Test func ustarPrefixAndDotSlashNames() throws {
    let scratch = try Scratch("ova-prefix")
    defer { scratch.remove() }
    let folder = String(repeating: "d", count: 60) + "/" + String(repeating: "e", count: 60)
    _ = try scratch.directory(String(repeating: "d", count: 60))
    _ = try scratch.directory(folder)
    let href = folder + "/disk.vmdk"
    let source = try ApplianceFixture.disk(href, size: 8 << 20, seed: 9, in: scratch)
    try ApplianceFixture.ovf([(href, try ApplianceFixture.fileSize(source.vmdk), source.size)])
      .write(toFile: scratch.file("p.ovf"), atomically: true, encoding: .utf8)
    let ova = scratch.file("p.ova")
    try run("tar", ["--format=ustar", "-C", scratch.path, "-cf", ova, "./p.ovf", "./" + href])
    let appliance = try Appliance(path: ova, logger: testLogger)
    #expect(appliance.descriptorName == "p.ovf")
    #expect(appliance.disks.map(\.directoryName) == ["1-disk.vmdk"])
    #expect(try ApplianceFixture.disksMatch(appliance, [source]))
  }

  @Test func directoryWithOVFMatchesQemu() throws {
    let scratch = try Scratch("ovf-dir")
    defer { scratch.remove() }
    let directory = try scratch.directory("app")
    let source = try ApplianceFixture.disk("app/disk1.vmdk", size: 8 << 20, seed: 5, in: scratch)
    try ApplianceFixture.ovf([("disk1.vmdk", try ApplianceFixture.fileSize(source.vmdk), source.size)])
      .write(toFile: directory + "/vm.ovf", atomically: true, encoding: .utf8)
    #expect(Appliance.recognizes(directory))
    for path in [directory, directory + "/vm.ovf"] {
      let appliance = try Appliance(path: path, logger: testLogger)
      #expect(appliance.descriptorName == "vm.ovf")
      #expect(try ApplianceFixture.disksMatch(appliance, [source]))
    }
  }

  @Test func verifyFindsACorruptedMember() throws {
    let scratch = try Scratch("ova-verify")
    defer { scratch.remove() }
    let source = try ApplianceFixture.disk("disk1.vmdk", size: 8 << 20, seed: 6, in: scratch)
    try ApplianceFixture.ovf([("disk1.vmdk", try ApplianceFixture.fileSize(source.vmdk), source.size)])
      .write(toFile: scratch.file("app.ovf"), atomically: true, encoding: .utf8)
    let ova = scratch.file("app.ova")
    try ApplianceFixture.tar(ova, directory: scratch.path, members: ["app.ovf", "disk1.vmdk"])
    let good = try Appliance(path: ova, logger: testLogger)
    var progress: [UInt64] = []
    #expect(try good.verify(try #require(try good.manifest())) { done, _ in progress.append(done) }.isEmpty)
    #expect(progress.last == (try good.disks[0].file.size + good.descriptorFile.size))

    // One byte of the vmdk member's last sector flipped (its end-of-stream marker padding).
    let member = try #require(good.disks.first?.file.source as? WindowSource)
    let handle = try FileHandle(forUpdating: URL(fileURLWithPath: ova))
    try handle.seek(toOffset: member.offset + member.length - 100)
    try handle.write(contentsOf: Data([0xA5]))
    try handle.close()
    let bad = try Appliance(path: ova, logger: testLogger)
    let mismatches = try bad.verify(try #require(try bad.manifest()))
    #expect(mismatches.map(\.name) == ["disk1.vmdk"])
  }

  @Test func digestsMatchKnownVectors() {
    var sha1 = Digest(.sha1)
    sha1.update(Array("abc".utf8))
    #expect(sha1.finish() == "a9993e364706816aba3e25717850c26c9cd0d89d")
    var sha256 = Digest(.sha256)
    sha256.update(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
    #expect(sha256.finish() == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    var split = Digest(.sha256)  // fed in pieces across block boundaries
    let million = [UInt8](repeating: 0x61, count: 1_000_000)
    for chunk in stride(from: 0, to: million.count, by: 777) {
      split.update(Array(million[chunk..<min(chunk + 777, million.count)]))
    }
    #expect(split.finish() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
  }
}
