import Foundation
import TestSupport
import Testing

/// The real binary: a two-disk OVA mounted shows the .ovf and each disk (with partitions/),
/// byte for byte what qemu makes of the sources; `info` lists the disks; `verify` passes, then
/// fails naming the file once a member is corrupted.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct ApplianceMountTests {
  @Test func mountInfoAndVerify() throws {
    let scratch = try Scratch("ova-mount")
    defer { scratch.remove() }
    let a = try ApplianceFixture.disk("system.vmdk", size: 16 << 20, seed: 7, in: scratch)
    let b = try ApplianceFixture.disk("data.vmdk", size: 8 << 20, seed: 8, in: scratch)
    let ovf = ApplianceFixture.ovf([
      ("system.vmdk", try ApplianceFixture.fileSize(a.vmdk), a.size),
      ("data.vmdk", try ApplianceFixture.fileSize(b.vmdk), b.size),
    ])
    try ovf.write(toFile: scratch.file("vm.ovf"), atomically: true, encoding: .utf8)
    let ova = scratch.file("vm.ova")
    try ApplianceFixture.tar(ova, directory: scratch.path, members: ["vm.ovf", "system.vmdk", "data.vmdk"])

    try withReadOnlyMount(ova, in: scratch) { mnt in
      let listing = try run("find", [mnt, "-printf", "%P\n"]).stdout.split(separator: "\n").sorted()
      #expect(
        listing == [
          "disks", "disks/1-system.vmdk", "disks/1-system.vmdk/disk.raw", "disks/1-system.vmdk/partitions",
          "disks/2-data.vmdk", "disks/2-data.vmdk/disk.raw", "disks/2-data.vmdk/partitions", "vm.ovf",
        ], "\(listing)")
      #expect(try run("cmp", [mnt + "/disks/1-system.vmdk/disk.raw", a.raw], check: false).status == 0)
      #expect(try run("cmp", [mnt + "/disks/2-data.vmdk/disk.raw", b.raw], check: false).status == 0)
      #expect(try String(contentsOfFile: mnt + "/vm.ovf", encoding: .utf8) == ovf)
      #expect(try run("sh", ["-c", "echo x > \(mnt)/disks/2-data.vmdk/disk.raw"], check: false).status != 0)
    }

    // Without -o ro too: read-only, said once.
    let mnt = try scratch.directory("rw")
    let r = try run("timeout", ["60", vdiskfsBinary, ova, mnt])
    #expect(r.stderr.contains("an appliance mounts read-only"), "\(r.stderr)")
    #expect(try run("cmp", [mnt + "/disks/1-system.vmdk/disk.raw", a.raw], check: false).status == 0)
    _ = try run("fusermount3", ["-u", mnt], check: false)
    for _ in 0..<50 where mountTable().contains(mnt) { usleep(20_000) }
    #expect(!mountTable().contains(mnt))

    let info = try run(vdiskfsBinary, ["info", ova])
    #expect(info.stdout.contains("disk 1: disks/1-system.vmdk"), "\(info.stdout)")
    #expect(info.stdout.contains("capacity: \(16 << 20) bytes"), "\(info.stdout)")
    #expect(info.stdout.contains("format: vmdk (http://www.vmware.com/"), "\(info.stdout)")
    #expect(info.stdout.contains("disk 2: disks/2-data.vmdk"), "\(info.stdout)")
    let json = try run(vdiskfsBinary, ["info", "--output", "json", ova]).stdout
    #expect(json.contains("\"virtual-size\": \(8 << 20)"), "\(json)")

    let ok = try run(vdiskfsBinary, ["verify", ova], check: false)
    #expect(ok.status == 0, "\(ok.stderr)")
    #expect(ok.stdout.contains("3 file(s) match the manifest"), "\(ok.stdout)")
    // Corrupt one byte inside the data.vmdk member (found by its bytes in the archive).
    let archive = try Data(contentsOf: URL(fileURLWithPath: ova))
    let vmdk = try Data(contentsOf: URL(fileURLWithPath: b.vmdk))
    let at = try #require(archive.range(of: vmdk)).lowerBound + vmdk.count - 64
    let handle = try FileHandle(forUpdating: URL(fileURLWithPath: ova))
    try handle.seek(toOffset: UInt64(at))
    try handle.write(contentsOf: Data([archive[at] ^ 0xFF]))
    try handle.close()
    let bad = try run(vdiskfsBinary, ["verify", ova], check: false)
    #expect(bad.status != 0)
    #expect(bad.stderr.contains("data.vmdk: digest mismatch"), "\(bad.stderr)")
    #expect(!bad.stderr.contains("system.vmdk"), "\(bad.stderr)")
  }

  @Test func gzipMembersAreRefusedByTheCLI() throws {
    let scratch = try Scratch("ova-gzip")
    defer { scratch.remove() }
    try Data(count: 4096).write(to: URL(fileURLWithPath: scratch.file("disk.img")))
    try ApplianceFixture.ovf([("disk.img", 4096, 4096)], extraFileAttributes: " ovf:compression=\"gzip\"")
      .write(toFile: scratch.file("g.ovf"), atomically: true, encoding: .utf8)
    let ova = scratch.file("g.ova")
    try ApplianceFixture.tar(ova, directory: scratch.path, members: ["g.ovf", "disk.img"], manifest: false)
    let mnt = try scratch.directory("mnt")
    let r = try run("timeout", ["60", vdiskfsBinary, ova, mnt], check: false)
    #expect(r.status != 0)
    #expect(r.stderr.contains("gzip-compressed"), "\(r.stderr)")
    #expect(!mountTable().contains(mnt))
  }

  /// A disk stored as a GNU sparse member: the mount and `info` give the one error naming the
  /// archive, the member and its type.
  @Test func sparseMemberDisksAreRefusedByTheCLI() throws {
    let scratch = try Scratch("ova-sparse-cli")
    defer { scratch.remove() }
    let disk = scratch.file("disk.img")
    try run("truncate", ["-s", "4M", disk])
    try sh("printf data | dd of=\(disk) bs=1 seek=1048576 conv=notrunc status=none")
    try ApplianceFixture.ovf([("disk.img", 4 << 20, 4 << 20)])
      .write(toFile: scratch.file("s.ovf"), atomically: true, encoding: .utf8)
    let ova = scratch.file("s.ova")
    try run("tar", ["-S", "--format=gnu", "-C", scratch.path, "-cf", ova, "s.ovf", "disk.img"])
    let message = "\(ova): member \"disk.img\" is a GNU sparse file"
    let mnt = try scratch.directory("mnt")
    let mounted = try run("timeout", ["60", vdiskfsBinary, ova, mnt], check: false)
    #expect(mounted.status != 0)
    #expect(mounted.stderr.contains(message), "\(mounted.stderr)")
    #expect(!mountTable().contains(mnt))
    let info = try run(vdiskfsBinary, ["info", ova], check: false)
    #expect(info.status == mounted.status, "\(info.stderr)")
    #expect(info.stderr.contains(message), "\(info.stderr)")
  }
}
