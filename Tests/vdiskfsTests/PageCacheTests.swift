import Foundation
import Synchronization
import TestSupport
import Testing

/// Read-write views keep their page cache across opens, and every change through the mount drops
/// exactly the stale pages: of the file it went through when the kernel does not (direct I/O), and
/// of the files that alias the bytes (`partitions/p1.raw` shows a range of `disk.raw`).
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct PageCacheTests {
  static let oDirect: Int32 = 0o40000  // x86-64 and arm64 differ; the CI machines are x86-64
  /// p1 starts at 1 MiB of the disk and is 8 MiB long.
  static let partitionStart: UInt64 = 1 << 20

  /// A 16 MiB qcow2 with an MBR (p1 = 1 MiB + 8 MiB) and 0x11 from 1 MiB on.
  static func makeImage(_ scratch: Scratch) throws -> String {
    let raw = scratch.file("p.raw")
    try run("truncate", ["-s", "16M", raw])
    try sh("printf 'label: dos\\nstart=2048, size=16384, type=83\\n' | sfdisk -q '\(raw)'")
    let image = scratch.file("p.qcow2")
    try Qemu.img("convert", "-f", "raw", "-O", "qcow2", raw, image)
    try Qemu.io(image, ["write -P 0x11 1M 15M"])
    return image
  }

  /// Buffered readers hold descriptors on disk.raw and p1.raw with their pages cached; direct
  /// writes, buffered writes, writes through the partition, a punched hole, a zeroed range and a
  /// truncate go through other descriptors; each time both readers see the new bytes at once.
  @Test func bufferedReadersSeeEveryChangeThroughOtherDescriptors() throws {
    let scratch = try Scratch("pcache")
    defer { scratch.remove() }
    let image = try Self.makeImage(scratch)
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }
    let p1 = mounted.mountpoint + "/partitions/p1.raw"
    let disk = try PositionalFile(mounted.diskRaw, flags: O_RDONLY)
    let part = try PositionalFile(p1, flags: O_RDONLY)
    let base: UInt64 = 2 << 20  // disk offset of the range under test (p1 offset 1 MiB)
    let inPart = base - Self.partitionStart

    /// Both readers see `expected` at disk offset `base + at`.
    func expectSeen(
      _ at: UInt64, _ expected: [UInt8], _ what: String, sourceLocation: SourceLocation = #_sourceLocation
    )
      throws
    {
      #expect(
        try disk.read(at: base + at, count: expected.count) == expected, "disk.raw after \(what)",
        sourceLocation: sourceLocation)
      #expect(
        try part.read(at: inPart + at, count: expected.count) == expected, "p1.raw after \(what)",
        sourceLocation: sourceLocation)
    }
    // Fill both caches with the range (and the end of the disk for the truncate).
    try expectSeen(0, [UInt8](repeating: 0x11, count: 256 << 10), "nothing")
    #expect(try disk.read(at: (16 << 20) - 65536, count: 65536) == [UInt8](repeating: 0x11, count: 65536))

    // A direct (O_DIRECT) write through disk.raw.
    let direct = open(mounted.diskRaw, O_RDWR | Self.oDirect | O_CLOEXEC)
    #expect(direct >= 0)
    var directOpen = true
    defer { if directOpen { close(direct) } }
    var aligned: UnsafeMutableRawPointer?
    #expect(posix_memalign(&aligned, 4096, 4096) == 0)
    let block = try #require(aligned)
    defer { free(block) }
    block.initializeMemory(as: UInt8.self, repeating: 0x22, count: 4096)
    #expect(pwrite(direct, block, 4096, off_t(base)) == 4096)
    try expectSeen(0, [UInt8](repeating: 0x22, count: 4096) + [0x11], "a direct write to disk.raw")

    // A buffered write through disk.raw (the kernel updates disk.raw's pages; p1's are told).
    let buffered = try PositionalFile(mounted.diskRaw)
    try buffered.write([UInt8](repeating: 0x33, count: 4096), at: base + 8192)
    try expectSeen(8192, [UInt8](repeating: 0x33, count: 4096) + [0x11], "a buffered write to disk.raw")
    buffered.close()

    // A write through the partition (opened buffered, served with direct I/O).
    let writer = try PositionalFile(p1)
    try writer.write([UInt8](repeating: 0x44, count: 4096), at: inPart + 16384)
    try expectSeen(16384, [UInt8](repeating: 0x44, count: 4096) + [0x11], "a write to p1.raw")

    // A punched hole through disk.raw and a zeroed range through p1.raw.
    let zeros = [UInt8](repeating: 0, count: 16384)
    try PositionalFile(mounted.diskRaw).zero(at: base + 32768, length: 16384, punch: true)
    try expectSeen(32768 - 1, [0x11] + zeros + [0x11], "a punched hole in disk.raw")
    try writer.zero(at: inPart + 65536, length: 16384, punch: false)
    try expectSeen(65536 - 1, [0x11] + zeros + [0x11], "a zeroed range of p1.raw")
    writer.close()

    // A truncate that grows the disk: the reader sees the new size and the new zeros.
    try run("truncate", ["-s", "\(32 << 20)", mounted.diskRaw])
    var st = stat()
    #expect(fstat(disk.fd, &st) == 0 && st.st_size == 32 << 20)
    #expect(
      try disk.read(at: (16 << 20) - 4096, count: 8192)
        == [UInt8](repeating: 0x11, count: 4096) + [UInt8](repeating: 0, count: 4096))

    disk.close()
    part.close()
    close(direct)
    directOpen = false
    mounted.unmount()
    unmounted = true
    try expectCleanCheck(image)
  }

  /// A second open of the read-write disk.raw finds the pages the first one read (keep_cache):
  /// mincore(2) over a mapping of the new descriptor counts them resident.
  @Test func aSecondOpenOfAReadWriteDiskIsServedFromThePageCache() throws {
    let scratch = try Scratch("pcache2")
    defer { scratch.remove() }
    let image = try Self.makeImage(scratch)
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    defer { mounted.unmount() }
    let length = 4 << 20
    let first = try PositionalFile(mounted.diskRaw, flags: O_RDONLY)
    #expect(try first.read(at: 0, count: length).count == length)
    first.close()
    // A write elsewhere (and its close, which syncs) keeps what it did not change.
    let writer = try PositionalFile(mounted.diskRaw)
    try writer.write([1, 2, 3], at: 8 << 20)
    writer.close()

    let second = try PositionalFile(mounted.diskRaw, flags: O_RDONLY)
    defer { second.close() }
    let mapping = mmap(nil, length, PROT_READ, MAP_SHARED, second.fd, 0)
    #expect(mapping != MAP_FAILED)
    guard let mapping, mapping != MAP_FAILED else { return }
    defer { munmap(mapping, length) }
    var resident = [UInt8](repeating: 0, count: length / Int(sysconf(Int32(_SC_PAGESIZE))))
    #expect(mincore(mapping, length, &resident) == 0)
    let pages = resident.filter { $0 & 1 != 0 }.count
    #expect(pages == resident.count, "\(pages) of \(resident.count) pages still cached after reopening")
  }

  /// Every kind of change and cached reader at once on aliasing files (buffered, mmap and direct
  /// writers of disk.raw and p1.raw, buffered readers of both, discards): no request may wait
  /// forever for an invalidation (fio under a timeout), and the image stays consistent.
  @Test func concurrentChangesAndCachedReadersNeverDeadlock() throws {
    let scratch = try Scratch("pcache3")
    defer { scratch.remove() }
    let image = try Self.makeImage(scratch)
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }
    let disk = mounted.diskRaw
    let p1 = mounted.mountpoint + "/partitions/p1.raw"
    func job(_ name: String, _ file: String, _ options: [String]) -> [String] {
      ["--name=\(name)", "--filename=\(file)", "--size=6M", "--bs=4k"] + options
    }
    let arguments =
      ["30", "fio", "--ioengine=psync", "--time_based", "--runtime=4", "--randrepeat=0"]
      + job("disk-buffered-write", disk, ["--rw=randwrite", "--offset=1M"])
      + job("disk-direct-write", disk, ["--rw=randwrite", "--direct=1", "--offset=1M"])
      + job("disk-discard", disk, ["--rw=randtrim", "--ioengine=falloc", "--bs=64k", "--offset=1M"])
      + job("p1-write", p1, ["--rw=randwrite"])
      + job("p1-direct-write", p1, ["--rw=randwrite", "--direct=1"])
      + job("disk-read", disk, ["--rw=randread", "--bs=64k"])
      + job("p1-read", p1, ["--rw=randread", "--bs=64k"])
    // fio's mmap engine writes outside its --offset (over the partition table): map by hand.
    let length = 6 << 20
    let mapper = try PositionalFile(disk)
    let mapping = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, mapper.fd, 1 << 20)
    guard let mapping, mapping != MAP_FAILED else {
      Issue.record("cannot map disk.raw: \(errno)")
      return
    }
    let writing = Atomic<Bool>(true)
    let finished = DispatchSemaphore(value: 0)
    let mapped = UInt(bitPattern: mapping)
    let writer = Thread {
      defer { finished.signal() }
      guard let base = UnsafeMutableRawPointer(bitPattern: mapped) else { return }
      var rng = SplitMix64(seed: 7)
      var n = 0
      while writing.load(ordering: .relaxed) {
        let at = Int(rng.next() % UInt64(length))
        base.storeBytes(of: UInt8(truncatingIfNeeded: n), toByteOffset: at, as: UInt8.self)
        n += 1
        if n % 256 == 0 { msync(base, length, MS_SYNC) }
      }
      msync(base, length, MS_SYNC)
    }
    writer.start()
    let r = try run("timeout", arguments, check: false)
    writing.store(false, ordering: .relaxed)
    finished.wait()
    munmap(mapping, length)
    mapper.close()
    #expect(r.status == 0, "fio: \(r.status) \(r.stdout.suffix(1500)) \(r.stderr.suffix(1500))")
    // The mount still answers.
    #expect(try PositionalFile(p1, flags: O_RDONLY).read(at: 0, count: 4096).count == 4096)
    mounted.unmount()
    unmounted = true
    try expectCleanCheck(image)
  }
}
