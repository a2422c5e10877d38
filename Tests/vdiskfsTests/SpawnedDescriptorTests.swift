import Foundation
import TestSupport
import Testing

/// Children of the test process get none of its descriptors but 0, 1 and 2 (`withSpawnLock` in
/// TestSupport says why): tests run in parallel, and a file one test holds under its mount must
/// never end up in a child another test starts.
@Suite struct SpawnedDescriptorTests {
  /// A descriptor opened without close-on-exec (plain `open`, Foundation's FileHandle) is not
  /// among the descriptors of a child `run` starts.
  @Test func runPassesNoOtherDescriptorToItsChild() throws {
    let scratch = try Scratch("spawnfd")
    defer { scratch.remove() }
    let plain = scratch.file("opened-without-cloexec")
    let handled = scratch.file("opened-by-filehandle")
    for path in [plain, handled] {
      #expect(FileManager.default.createFile(atPath: path, contents: Data([1])))
    }
    let fd = open(plain, O_RDONLY)  // without O_CLOEXEC on purpose: as a careless test would
    try #require(fd >= 0)
    defer { close(fd) }
    let handle = try #require(FileHandle(forReadingAtPath: handled))
    defer { try? handle.close() }
    let listing = try run("ls", ["-l", "/proc/self/fd"]).stdout
    #expect(!listing.contains(plain), "\(listing)")
    #expect(!listing.contains(handled), "\(listing)")
    #expect(listing.contains("/proc/"), "the child lists its own descriptors: \(listing)")
  }
}

@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct SpawnedDescriptorMountTests {
  /// A vdiskfs daemon started while a test holds another mount's disk.raw open (here without
  /// close-on-exec) holds nothing of it: that mount unmounts at the first `fusermount3 -u` once
  /// the test closed the file. (Before the spawn closed inherited descriptors, the second daemon
  /// kept the first disk.raw open for its whole life, and this unmount failed with EBUSY.)
  @Test func aDaemonStartedMeanwhileDoesNotKeepAnotherMountBusy() throws {
    let scratch = try Scratch("spawnfd-mount")
    defer { scratch.remove() }
    try Qemu.create(scratch.file("first.qcow2"), size: "1M")
    try Qemu.create(scratch.file("second.qcow2"), size: "1M")
    let first = try MountedImage.mount(scratch.file("first.qcow2"), in: scratch)
    defer { first.unmount() }
    let fd = open(first.diskRaw, O_RDONLY)  // without O_CLOEXEC on purpose
    try #require(fd >= 0)
    let second = try MountedImage.mount(scratch.file("second.qcow2"), in: scratch)
    defer { second.unmount() }
    close(fd)
    let r = try run("fusermount3", ["-u", first.mountpoint], check: false)
    #expect(r.status == 0, "\(r.stderr)")
    #expect(!isMounted(first.mountpoint))
  }

  /// The daemon holds nothing but its standard streams without close-on-exec (the image, /dev/fuse
  /// and its clones, pipes, eventfds all are), so that no child of it could hold the image or the
  /// connection; and nothing of the test process that started it.
  @Test func theDaemonsDescriptorsAreAllCloseOnExec() throws {
    let scratch = try Scratch("spawnfd-daemon")
    defer { scratch.remove() }
    let image = scratch.file("d.qcow2")
    try Qemu.create(image, size: "1M")
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    defer { mounted.unmount() }
    let pid = try WriteMountRuns.daemonPID(image: image, mnt: mounted.mountpoint)
    let descriptors = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")
    #expect(descriptors.count > 3, "\(descriptors)")
    var targets: [String] = []
    for fd in descriptors where (Int32(fd) ?? 0) > 2 {
      let info = try String(contentsOfFile: "/proc/\(pid)/fdinfo/\(fd)", encoding: .utf8)
      let flags = info.split(separator: "\n").first { $0.hasPrefix("flags:") }
        .flatMap { Int($0.dropFirst("flags:".count).trimmingCharacters(in: .whitespaces), radix: 8) }
      let target =
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")) ?? "?"
      targets.append(target)
      #expect(flags.map { $0 & Int(O_CLOEXEC) != 0 } == true, "fd \(fd) -> \(target): \(info)")
    }
    #expect(targets.contains(image), "\(targets)")
    #expect(targets.contains("/dev/fuse"), "\(targets)")
  }
}
