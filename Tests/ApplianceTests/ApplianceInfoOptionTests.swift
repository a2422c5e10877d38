import Foundation
import TestSupport
import Testing

/// `vdiskfs info` of an appliance with `info`'s options: `--output` and `--backing-chain` (each
/// disk's own image information) honoured, `cache_size` and `nobacking` taken, `--format` and
/// `--backing-dir` refused (exit 2), as mount options are.
@Suite struct ApplianceInfoOptionTests {
  static func twoDiskOVA(in scratch: Scratch) throws -> (ova: String, sizes: [UInt64], files: [UInt64]) {
    let a = try ApplianceFixture.disk("system.vmdk", size: 8 << 20, seed: 21, in: scratch)
    let b = try ApplianceFixture.disk("data.vmdk", size: 4 << 20, seed: 22, in: scratch)
    let files = [try ApplianceFixture.fileSize(a.vmdk), try ApplianceFixture.fileSize(b.vmdk)]
    try ApplianceFixture.ovf([("system.vmdk", files[0], a.size), ("data.vmdk", files[1], b.size)])
      .write(toFile: scratch.file("vm.ovf"), atomically: true, encoding: .utf8)
    let ova = scratch.file("vm.ova")
    try ApplianceFixture.tar(ova, directory: scratch.path, members: ["vm.ovf", "system.vmdk", "data.vmdk"])
    return (ova, [a.size, b.size], files)
  }

  @Test func backingChainShowsEachDisksImage() throws {
    let scratch = try Scratch("ova-info-chain")
    defer { scratch.remove() }
    let (ova, sizes, files) = try Self.twoDiskOVA(in: scratch)

    let plain = try run(vdiskfsBinary, ["info", "--output", "json", ova]).stdout
    #expect(!plain.contains("backing-chain"), "\(plain)")
    let json = try run(vdiskfsBinary, ["info", "--output", "json", "--backing-chain", ova]).stdout
    let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    let disks = try #require(object["disks"] as? [[String: Any]])
    #expect(disks.count == 2)
    for (i, disk) in disks.enumerated() {
      let chain = try #require(disk["backing-chain"] as? [[String: Any]], "\(json)")
      #expect(chain.count == 1)
      let image = try #require(chain.first)
      #expect(image["format"] as? String == "vmdk")
      #expect(image["virtual-size"] as? Int == Int(sizes[i]))
      #expect((image["filename"] as? String) == ova + "/" + ["system.vmdk", "data.vmdk"][i])
      // The member's bytes in the archive, not the archive's.
      #expect(image["actual-size"] as? Int == Int((files[i] + 511) / 512 * 512), "\(image)")
      let specific = (image["format-specific"] as? [String: Any])?["data"] as? [String: Any]
      #expect(specific?["create-type"] as? String == "streamOptimized", "\(image)")
    }

    let human = try run(vdiskfsBinary, ["info", "--backing-chain", ova]).stdout
    let lines = human.split(separator: "\n").map(String.init)
    let second = try #require(lines.firstIndex(of: "disk 2: disks/2-data.vmdk"), "\(human)")
    #expect(lines[..<second].contains("    image: \(ova)/system.vmdk"), "\(human)")
    #expect(lines[..<second].contains("    virtual size: 8 MiB (8388608 bytes)"), "\(human)")
    #expect(lines[second...].contains("    image: \(ova)/data.vmdk"), "\(human)")
    #expect(lines[second...].contains("        create-type: streamOptimized"), "\(human)")
    #expect(!(try run(vdiskfsBinary, ["info", ova]).stdout.contains("create-type")))
  }

  @Test func optionsThatDoNotApplyAreRefused() throws {
    let scratch = try Scratch("ova-info-options")
    defer { scratch.remove() }
    let (ova, _, _) = try Self.twoDiskOVA(in: scratch)
    // Taken: an opening option with a meaning for the disks, and one without effect on them.
    for options in [["-o", "cache_size=64k"], ["-o", "nobacking"]] {
      let r = try run(vdiskfsBinary, ["info"] + options + [ova], check: false)
      #expect(r.status == 0, "\(options): \(r.stderr)")
      #expect(r.stdout.contains("disk 2: disks/2-data.vmdk"), "\(options)")
    }
    let refusals: [([String], String)] = [
      (["--format", "vmdk"], "--format / -o format does not apply"),
      (["-o", "format=raw"], "--format / -o format does not apply"),
      (["--backing-dir", scratch.path], "--backing-dir / -o backing_dir does not apply"),
      (["-o", "backing_dir=\(scratch.path)"], "--backing-dir / -o backing_dir does not apply"),
      (["-o", "ro"], "'ro' is a mount option"),
    ]
    for (options, message) in refusals {
      let r = try run(vdiskfsBinary, ["info"] + options + [ova], check: false)
      #expect(r.status == 2, "\(options): \(r.status) \(r.stderr)")
      #expect(r.stderr.contains(message), "\(options): \(r.stderr)")
      #expect(r.stdout.isEmpty, "\(options)")
    }
  }
}

/// A mount refuses the same options for an appliance.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct ApplianceMountOptionTests {
  @Test func formatAndBackingDirAreRefused() throws {
    let scratch = try Scratch("ova-mount-options")
    defer { scratch.remove() }
    let (ova, _, _) = try ApplianceInfoOptionTests.twoDiskOVA(in: scratch)
    for options in ["ro,format=vmdk", "ro,backing_dir=\(scratch.path)"] {
      let mnt = try scratch.directory("m\(options.count)")
      let r = try run("timeout", ["60", vdiskfsBinary, ova, mnt, "-o", options], check: false)
      #expect(r.status == 2, "\(options): \(r.stderr)")
      #expect(r.stderr.contains("is an OVF appliance"), "\(r.stderr)")
      #expect(!mountTable().contains(mnt))
    }
    try withReadOnlyMount(ova, in: scratch, arguments: ["-o", "cache_size=64k"]) { mnt in
      #expect(FileManager.default.fileExists(atPath: mnt + "/disks/2-data.vmdk/disk.raw"))
    }
  }
}
