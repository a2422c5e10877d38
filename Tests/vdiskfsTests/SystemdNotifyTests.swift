import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The `Type=notify` protocol as systemd sees it: the test plays the service manager, listening on
/// the socket it names in `NOTIFY_SOCKET` and reading each sender's pid from its credentials.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct SystemdNotifyTests {
  /// The unit's way (`vdiskfs mount -f`, path socket): READY=1 comes from the process the manager
  /// started, when disk.raw already reads the image's bytes; SIGTERM (systemctl stop) brings
  /// STOPPING=1, then the process writes back, unmounts and exits 0.
  @Test func foregroundReadyAfterDiskReadsAndStoppingBeforeExit() throws {
    let scratch = try Scratch("notify")
    defer { scratch.remove() }
    let img = scratch.file("vm.qcow2")
    try Qemu.create(img, size: "4M")
    try Qemu.io(img, ["write -P 0x5a 0 1M", "write -P 0xa5 3M 64k"])
    let oracle = try Qemu.rawFile(of: img, scratch: scratch)
    let mnt = try scratch.directory("mnt")
    let listener = try NotifyListener(name: scratch.file("notify.sock"))

    let process = try spawnVdiskfs(
      ["mount", "-f", "-o", "ro", img, mnt], notifySocket: listener.name, log: scratch.file("log"))
    let pid = process.processIdentifier
    defer { stopAndUnmount(pid: pid, mountpoint: mnt) }

    let ready = try #require(listener.receive(containing: "READY=1"), "no READY=1 within 30 s")
    // At the moment READY=1 arrives the mount must already serve the image's bytes.
    #expect(isMounted(mnt))
    #expect(try compareFiles(mnt + "/disk.raw", oracle) == nil)
    #expect(ready.pid == pid, "READY=1 must come from the process the manager started")
    #expect(
      !ready.fields.contains { $0.hasPrefix("MAINPID=") }, "a foreground process is already the main one")
    let status = try #require(ready.fields.first { $0.hasPrefix("STATUS=") })
    #expect(status.contains(img) && status.contains("qcow2") && status.contains("read-only"), "\(status)")
    #expect(status.contains(mnt), "\(status)")

    #expect(kill(pid, SIGTERM) == 0)
    let stopping = try #require(listener.receive(containing: "STOPPING=1"), "no STOPPING=1 after SIGTERM")
    #expect(stopping.pid == pid)
    process.waitUntilExit()
    #expect(process.terminationReason == .exit && process.terminationStatus == 0)
    #expect(!isMounted(mnt))
  }

  /// READY=1 is not sent on the mount alone: libfuse's debug log (-d) shows each request as the
  /// session loop takes it, and when READY=1 arrives the loop has already served an OPEN and a
  /// READ of disk.raw (vdiskfs's own probe; nothing else touches the mount before READY=1).
  @Test func readyOnlyAfterTheLoopServedAnOpenAndARead() throws {
    let scratch = try Scratch("notify")
    defer { scratch.remove() }
    let img = scratch.file("vm.qcow2")
    try Qemu.create(img, size: "4M")
    let mnt = try scratch.directory("mnt")
    let listener = try NotifyListener(name: scratch.file("notify.sock"))
    let log = scratch.file("log")
    let process = try spawnVdiskfs(["-d", "-o", "ro", img, mnt], notifySocket: listener.name, log: log)
    let pid = process.processIdentifier
    defer { stopAndUnmount(pid: pid, mountpoint: mnt) }

    _ = try #require(listener.receive(containing: "READY=1"), "no READY=1 within 30 s")
    let served = try String(contentsOfFile: log, encoding: .utf8)
    #expect(served.contains("opcode: OPEN"), "READY=1 before the loop served an OPEN:\n\(served)")
    #expect(served.contains("opcode: READ"), "READY=1 before the loop served a READ:\n\(served)")
    #expect(kill(pid, SIGTERM) == 0)
    process.waitUntilExit()
    #expect(process.terminationStatus == 0)
  }

  /// The daemonizing way, with an abstract socket (`@name`) and a writable mount: READY=1 names the
  /// daemon in MAINPID= and comes from it (the parent has exited); an external unmount brings
  /// STOPPING=1 and everything written is in the image when the daemon is gone.
  @Test func daemonNamesItselfAndWritesBackOnUnmount() throws {
    let scratch = try Scratch("notify")
    defer { scratch.remove() }
    let img = scratch.file("vm.qcow2")
    try Qemu.create(img, size: "8M")
    let mnt = try scratch.directory("mnt")
    let listener = try NotifyListener(name: "@vdiskfs-test-\(UUID().uuidString)")

    let r = try run(
      "env", ["NOTIFY_SOCKET=\(listener.name)", "timeout", "60", vdiskfsBinary, img, mnt], check: false)
    #expect(r.status == 0, "\(r.stderr)")
    // Whatever fails below, the daemon goes: unmounting ends it (and waits for it).
    defer { if isMounted(mnt) { MountedImage(mountpoint: mnt).unmount() } }
    let ready = try #require(listener.receive(containing: "READY=1"), "no READY=1 within 30 s")
    let mainPID = try #require(
      ready.fields.first { $0.hasPrefix("MAINPID=") }.flatMap { Int32($0.dropFirst("MAINPID=".count)) })
    defer { stopAndUnmount(pid: mainPID, mountpoint: mnt) }
    #expect(ready.pid == mainPID, "READY=1 must come from the daemon it names")
    #expect(kill(mainPID, 0) == 0, "MAINPID names a live process")
    #expect(ready.fields.contains { $0.hasPrefix("STATUS=") && $0.contains("read-write") })

    let pattern = [UInt8](repeating: 0xc3, count: 65536)
    let handle = try #require(FileHandle(forWritingAtPath: mnt + "/disk.raw"))
    try handle.seek(toOffset: 1 << 20)
    try handle.write(contentsOf: pattern)
    try handle.close()

    // Tests run in parallel: a child another test spawns while the handle above was open may
    // still hold an inherited copy of it for a moment ("target is busy"), so retry briefly.
    var unmounted = try run("umount", [mnt], check: false)
    for _ in 0..<50 where unmounted.status != 0 {
      usleep(100_000)
      unmounted = try run("umount", [mnt], check: false)
    }
    #expect(unmounted.status == 0, "umount: \(unmounted.stderr)")
    let stopping = try #require(listener.receive(containing: "STOPPING=1"), "no STOPPING=1 after umount")
    #expect(stopping.pid == mainPID)
    for _ in 0..<500 where kill(mainPID, 0) == 0 { usleep(20_000) }
    #expect(kill(mainPID, 0) != 0, "the daemon exits after the unmount")
    _ = try run("qemu-img", ["check", "-q", img])
    let raw = try Qemu.rawContent(of: img, scratch: scratch)
    #expect(Array(raw[(1 << 20)..<((1 << 20) + 65536)]) == pattern)
  }

  /// Without NOTIFY_SOCKET nothing is sent; with a socket nobody listens on, the mount still works.
  @Test func deadSocketDoesNotStopTheMount() throws {
    let scratch = try Scratch("notify")
    defer { scratch.remove() }
    let img = scratch.file("vm.qcow2")
    try Qemu.create(img, size: "1M")
    let mnt = try scratch.directory("mnt")
    let r = try run(
      "env",
      ["NOTIFY_SOCKET=\(scratch.file("nobody.sock"))", "timeout", "60", vdiskfsBinary, img, mnt, "-o", "ro"],
      check: false)
    #expect(r.status == 0, "\(r.stderr)")
    defer { MountedImage(mountpoint: mnt).unmount() }
    #expect(isMounted(mnt))
    #expect(FileManager.default.fileExists(atPath: mnt + "/disk.raw"))
  }

  /// Starts vdiskfs as this process's child (Foundation's Process passes it none of our other
  /// descriptors; under `withSpawnLock`, as every spawn), stdin from /dev/null, output to `log`.
  private func spawnVdiskfs(_ arguments: [String], notifySocket: String, log: String) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: vdiskfsBinary)
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    environment["NOTIFY_SOCKET"] = notifySocket
    process.environment = environment
    _ = FileManager.default.createFile(atPath: log, contents: nil)
    let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = output
    process.standardError = output
    try withSpawnLock { try process.run() }
    try output.close()
    return process
  }

  /// Ends `pid` (if still running) and the mount, whatever the test got to.
  private func stopAndUnmount(pid: pid_t, mountpoint: String) {
    if kill(pid, 0) == 0 { kill(pid, SIGTERM) }
    for _ in 0..<1000 where kill(pid, 0) == 0 { usleep(20_000) }
    if isMounted(mountpoint) { MountedImage(mountpoint: mountpoint).unmount() }
  }
}

/// A notification socket as systemd makes one: `AF_UNIX` datagrams with `SO_PASSCRED`, so that
/// each message carries its sender's pid. `name` is a path, or `@name` for an abstract socket.
final class NotifyListener {
  let name: String
  private let fd: Int32

  init(name: String) throws {
    self.name = name
    fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    var on: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, socklen_t(MemoryLayout<Int32>.size))
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    var bytes = Array(name.utf8)
    let abstract = bytes.first == UInt8(ascii: "@")
    if abstract { bytes[0] = 0 }
    withUnsafeMutableBytes(of: &address.sun_path) { for (i, b) in bytes.enumerated() { $0[i] = b } }
    let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0 else {
      let e = errno
      close(fd)
      throw POSIXError(POSIXErrorCode(rawValue: e) ?? .EIO)
    }
  }

  deinit {
    close(fd)
    if name.hasPrefix("/") { unlink(name) }
  }

  struct Message {
    var pid: pid_t
    var fields: [String]
  }

  /// The first message (within `timeout` seconds) that has `field` among its lines.
  func receive(containing field: String, timeout: Double = 30) -> Message? {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
      var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
      guard poll(&poller, 1, 200) > 0, let message = receiveOne() else { continue }
      if message.fields.contains(field) { return message }
    }
    return nil
  }

  /// One datagram and the pid from its SCM_CREDENTIALS control message (-1 if absent).
  private func receiveOne() -> Message? {
    var data = [UInt8](repeating: 0, count: 4096)
    // cmsghdr (len: size_t, level: int, type: int) then struct ucred (pid, uid, gid), 8-aligned.
    var control = [UInt8](repeating: 0, count: 64)
    let received = data.withUnsafeMutableBytes { dataBytes in
      control.withUnsafeMutableBytes { controlBytes in
        var iov = iovec(iov_base: dataBytes.baseAddress, iov_len: dataBytes.count)
        return withUnsafeMutablePointer(to: &iov) { iovPointer in
          var header = msghdr()
          header.msg_iov = iovPointer
          header.msg_iovlen = 1
          header.msg_control = controlBytes.baseAddress
          header.msg_controllen = controlBytes.count
          return recvmsg(fd, &header, Int32(MSG_DONTWAIT))
        }
      }
    }
    guard received >= 0 else { return nil }
    var pid: pid_t = -1
    let headerSize = MemoryLayout<Int>.size + 2 * MemoryLayout<Int32>.size
    control.withUnsafeBytes { c in
      let level = c.loadUnaligned(fromByteOffset: MemoryLayout<Int>.size, as: Int32.self)
      let type = c.loadUnaligned(fromByteOffset: MemoryLayout<Int>.size + 4, as: Int32.self)
      if level == SOL_SOCKET && type == 2 {  // SCM_CREDENTIALS (not imported: an enum constant)
        pid = c.loadUnaligned(fromByteOffset: headerSize, as: pid_t.self)
      }
    }
    let text = String(decoding: data[0..<received], as: UTF8.self)
    return Message(pid: pid, fields: text.split(separator: "\n").map(String.init))
  }
}
