import Foundation
import TestSupport
import Testing

/// The use case: a qcow2 holding a GPT with an ext4 partition, mounted with vdiskfs, the
/// partition attached read-only from disk.raw and mounted, its files checked.
@Suite(.enabled(if: mountTestsEnabled, "needs root, /dev/fuse and loop devices"))
struct PartitionTests {
  @Test func ext4PartitionInsideAQcow2ReadsBackIntact() throws {
    loopDeviceGate.wait()
    defer { loopDeviceGate.signal() }
    let scratch = try Scratch("part")
    defer { scratch.remove() }
    let files = try scratch.directory("files")
    try sh(
      """
      set -e
      cd '\(files)'
      echo 'hello from the guest' > hello.txt
      mkdir -p etc && echo guest-host > etc/hostname
      head -c 3M /dev/urandom > random.bin
      """)
    let rawDisk = scratch.file("disk.img")
    try run("truncate", ["-s", "64M", rawDisk])
    try run("sgdisk", ["-o", "-n", "1:2048:+40M", "-t", "1:8300", rawDisk])
    try run("mkfs.ext4", ["-q", "-F", "-d", files, "-E", "offset=\(2048 * 512)", rawDisk, "40M"])
    let image = scratch.file("vm.qcow2")
    try Qemu.img("convert", "-O", "qcow2", "-o", "cluster_size=65536", rawDisk, image)
    let want = try run("bash", ["-c", "cd '\(files)' && sha256sum hello.txt etc/hostname random.bin"]).stdout

    let mounted = try MountedImage.mount(image, in: scratch, ["-o", "ro"])
    defer { mounted.unmount() }
    // Offsets from the partition table as sfdisk reads it from disk.raw itself.
    let table = try run("sfdisk", ["-J", mounted.diskRaw]).stdout
    let json = try #require(try JSONSerialization.jsonObject(with: Data(table.utf8)) as? [String: Any])
    let partitionTable = try #require(json["partitiontable"] as? [String: Any])
    #expect(partitionTable["label"] as? String == "gpt")
    let partitions = try #require(partitionTable["partitions"] as? [[String: Any]])
    let first = try #require(partitions.first)
    let start = try #require(first["start"] as? Int) * 512
    let size = try #require(first["size"] as? Int) * 512
    #expect(start == 2048 * 512)

    let loop = try run(
      "losetup", ["-r", "-f", "--show", "-o", String(start), "--sizelimit", String(size), mounted.diskRaw]
    ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    defer { _ = try? run("losetup", ["-d", loop], check: false) }
    let root = try scratch.directory("root")
    try run("mount", ["-o", "ro", loop, root])
    defer { _ = try? run("umount", [root], check: false) }
    let got = try run("bash", ["-c", "cd '\(root)' && sha256sum hello.txt etc/hostname random.bin"]).stdout
    #expect(got == want)
    #expect(try String(contentsOfFile: root + "/hello.txt", encoding: .utf8) == "hello from the guest\n")
  }
}
