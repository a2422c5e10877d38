import Foundation
import Logging
import Synchronization
import TestSupport
import Testing
import VDiskCore
import VDiskFUSE

@Suite("FUSE mount", .enabled(if: mountTestsEnabled))
struct MountTests {
  @Test func servesTheDiskReadOnly() throws {
    let m = try MountedDisk()
    defer { #expect(m.stop()) }
    let size = m.layer.virtualSize

    var st = stat()
    #expect(stat(m.disk, &st) == 0)
    #expect(st.st_size == off_t(size))
    #expect(st.st_mode == S_IFREG | 0o444)
    let dataBytes = size - (2 << 20) - 65536
    #expect(UInt64(st.st_blocks) == dataBytes / 512)
    #expect(stat(m.mountpoint, &st) == 0)
    #expect(st.st_mode == S_IFDIR | 0o555)

    let names = try FileManager.default.contentsOfDirectory(atPath: m.mountpoint)
    #expect(names.sorted() == ["disk.raw", "layers", "partitions", "snapshots"])

    // The whole file, byte for byte.
    let whole = try Data(contentsOf: URL(fileURLWithPath: m.disk))
    #expect(whole.count == Int(size))
    #expect(firstDifference([UInt8](whole), m.layer.content) == nil)

    let (fd, openError) = Posix.open(m.disk, O_RDONLY)
    #expect(openError == 0)
    defer { close(fd) }
    var rng = SplitMix64(seed: 42)
    for _ in 0..<200 {
      let offset = rng.next() % size
      let count = Int(1 + rng.next() % (300 << 10))
      let (bytes, e) = Posix.pread(fd, count: count, at: offset)
      #expect(e == 0)
      #expect(bytes == m.layer.expected(at: offset, count: min(count, Int(size - offset))))
    }
    // At and past end of file.
    #expect(Posix.pread(fd, count: 4096, at: size - 10).0.count == 10)
    #expect(Posix.pread(fd, count: 4096, at: size).0.isEmpty)
    #expect(Posix.pread(fd, count: 4096, at: size + (1 << 20)).0.isEmpty)

    // SEEK_DATA / SEEK_HOLE (zero run at 4 MiB..6 MiB, unallocated at 10 MiB + 64 KiB).
    #expect(Posix.lseek(fd, 0, seekData) == (0, 0))
    #expect(Posix.lseek(fd, 0, seekHole) == (4 << 20, 0))
    #expect(Posix.lseek(fd, 5 << 20, seekData) == (6 << 20, 0))
    #expect(Posix.lseek(fd, 6 << 20, seekHole) == (10 << 20, 0))
    #expect(Posix.lseek(fd, (10 << 20) + 100, seekData) == ((10 << 20) + 65536, 0))
    #expect(Posix.lseek(fd, Int64(size) - 1, seekHole) == (Int64(size), 0))
    #expect(Posix.lseek(fd, Int64(size), seekData).1 == ENXIO)
    #expect(Posix.lseek(fd, Int64(size), seekHole).1 == ENXIO)
    #expect(Posix.lseek(fd, 0, SEEK_END) == (Int64(size), 0))

    // Writers are refused.
    #expect(Posix.open(m.disk, O_RDWR).errno == EROFS)
    #expect(Posix.open(m.disk, O_WRONLY).errno == EROFS)
    #expect(truncate(m.disk, 0) != 0 && errno == EROFS)
    #expect(chmod(m.disk, 0o600) != 0 && errno == EROFS)
    #expect(Posix.open(m.mountpoint + "/new", O_CREAT | O_WRONLY).errno == EROFS)

    var fs = statvfs()
    #expect(statvfs(m.mountpoint, &fs) == 0)
    #expect(fs.f_bsize == 4096 && fs.f_blocks == UInt(size / 4096) && fs.f_files == 5)

    // The first request after INIT raised the connection's read-ahead.
    #expect(try mountReadAheadKilobytes(m.mountpoint) == MountOptions().readAheadKilobytes)

    let mounts = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
    #expect(mounts.contains("\(m.layer.file.path) \(m.mountpoint) fuse.vdiskfs ro,"))
  }

  @Test func concurrentReadersAllGetTheRightBytes() throws {
    let m = try MountedDisk()
    defer { #expect(m.stop()) }
    let size = m.layer.virtualSize
    let reference = m.scratch.file("reference")
    try Data(m.layer.content).write(to: URL(fileURLWithPath: reference))
    let failures = Atomic<Int>(0)
    let layer = m.layer
    let disk = m.disk
    DispatchQueue.concurrentPerform(iterations: 6) { worker in
      if worker < 2 {
        // Whole-file sequential readers in other processes.
        let r = try? run("cmp", [disk, reference], check: false)
        if r?.status != 0 { failures.add(1, ordering: .relaxed) }
        return
      }
      let (fd, e) = Posix.open(disk, O_RDONLY)
      guard e == 0 else {
        failures.add(1, ordering: .relaxed)
        return
      }
      defer { close(fd) }
      var rng = SplitMix64(seed: UInt64(worker))
      for _ in 0..<60 {
        let offset = rng.next() % size
        let count = Int(1 + rng.next() % (1 << 20))
        let (bytes, err) = Posix.pread(fd, count: count, at: offset)
        if err != 0 || bytes != layer.expected(at: offset, count: min(count, Int(size - offset))) {
          failures.add(1, ordering: .relaxed)
        }
      }
    }
    #expect(failures.load(ordering: .relaxed) == 0)
  }

  @Test func aDriverErrorFailsOnlyThatRead() throws {
    let corrupt = TestLayer.Segment(start: 8 << 20, end: (8 << 20) + 4096, kind: .corrupt)
    let m = try MountedDisk(size: 16 << 20, segments: [corrupt])
    defer { #expect(m.stop()) }
    let (fd, e) = Posix.open(m.disk, O_RDONLY | oDirect)
    #expect(e == 0)
    defer { close(fd) }
    // O_DIRECT: exactly the bytes asked for reach the file system.
    let (_, failure) = Posix.pread(fd, count: 4096, at: 8 << 20)
    #expect(failure == EIO)
    let (good, ok) = Posix.pread(fd, count: 4096, at: (8 << 20) + 4096)
    #expect(ok == 0 && good == m.layer.expected(at: (8 << 20) + 4096, count: 4096))
    // Buffered reads elsewhere still work, and the mount is alive.
    let buffered = Posix.open(m.disk, O_RDONLY)
    defer { close(buffered.fd) }
    #expect(Posix.pread(buffered.fd, count: 65536, at: 0) == (m.layer.expected(at: 0, count: 65536), 0))
    var st = stat()
    #expect(stat(m.disk, &st) == 0 && st.st_size == 16 << 20)
    #expect(st.st_blocks == 0)  // the allocation map hit the corrupt range: reported as 0
  }

  @Test func mountingOnABadPlaceFailsClearly() throws {
    let m = try MountedDisk(size: 1 << 20)
    defer { #expect(m.stop()) }
    let chain = LayerChain(top: m.layer)
    let logger = Logger(label: "fuse-test")
    func mountError(_ path: String) -> VDiskError? {
      do {
        let session = try FUSESession(chain: chain, options: MountOptions(), logger: logger)
        try session.mount(at: path)
        session.unmount()
        return nil
      } catch {
        return error as? VDiskError
      }
    }
    #expect(mountError(m.disk)?.kind == .invalidArgument)
    #expect(mountError(m.disk)?.detail.contains("not a directory") == true)
    #expect(mountError(m.scratch.file("missing"))?.kind == .notFound)
    let busy = mountError(m.mountpoint)
    #expect(busy?.kind == .invalidArgument)
    #expect(busy?.detail.contains("already a mount point") == true)
    // The first mount is untouched.
    #expect(FileManager.default.fileExists(atPath: m.disk))
  }

  @Test func anExternalUnmountEndsTheLoop() throws {
    let m = try MountedDisk(size: 1 << 20)
    defer { m.stop() }
    #expect(FileManager.default.fileExists(atPath: m.disk))
    try run("fusermount3", ["-u", m.mountpoint])
    #expect(m.waitForLoop() == 0)
    #expect(!m.isListedInProcMounts)
    m.session.unmount()  // idempotent after an external unmount
  }

  @Test func aSignalEndsTheLoop() throws {
    let m = try MountedDisk(size: 1 << 20, signals: true)
    defer { #expect(m.stop()) }
    #expect(FileManager.default.fileExists(atPath: m.disk))
    var thread: pthread_t?
    for _ in 0..<100 where thread == nil {
      thread = m.loopPthread
      if thread == nil { usleep(10_000) }
    }
    guard let thread else {
      Issue.record("the loop thread never started")
      return
    }
    #expect(pthread_kill(thread, SIGTERM) == 0)
    #expect(m.waitForLoop() == SIGTERM)
  }
}
