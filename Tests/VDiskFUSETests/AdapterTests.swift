import Glibc
import Logging
import TestSupport
import Testing
import VDiskCore

@testable import VDiskFUSE

@Suite("Adapter pieces")
struct AdapterTests {
  let logger = Logger(label: "test")

  @Test func errnoMappingCoversEveryKind() {
    let expected: [VDiskError.Kind: Int32] = [
      .corrupt: EIO, .io: EIO, .unsupported: EOPNOTSUPP, .noSpace: ENOSPC, .readOnly: EROFS,
      .notFound: ENOENT, .invalidArgument: EINVAL, .locked: EBUSY, .notPermitted: EPERM,
    ]
    for kind in VDiskError.Kind.allCases {
      let e = VDiskError(kind, path: "/img", offset: 512, "detail")
      #expect(errnoValue(for: e, logger: logger) == expected[kind])
    }
    #expect(errnoValue(for: VDiskError(.io, path: "/img", "x", errno: EAGAIN), logger: logger) == EAGAIN)
    #expect(errnoValue(for: VDiskError(.io, path: "/img", "x", errno: ENOSYS), logger: logger) == EIO)
    #expect(errnoValue(for: FileSystemError(ENXIO), logger: logger) == ENXIO)
    struct Other: Error {}
    #expect(errnoValue(for: Other(), logger: logger) == EIO)
  }

  @Test func mountOptionsBecomeLibfuseArguments() {
    var o = MountOptions()
    o.fsname = "/images/a,b\\c.qcow2"
    o.libfuseOptions = ["noatime"]
    #expect(
      o.arguments == [
        "vdiskfs", "-o", "fsname=/images/a\\,b\\\\c.qcow2", "-o", "subtype=vdiskfs", "-o",
        "default_permissions",
        "-o", "ro", "-o", "max_read=983040", "-o", "noatime",
      ])
    o.readOnly = false
    o.allowOther = true
    o.debug = true
    o.libfuseOptions = []
    o.maxRead = nil
    #expect(o.arguments.contains("allow_other") && !o.arguments.contains("ro") && o.arguments[1] == "-d")
    #expect(!o.arguments.contains { $0.hasPrefix("max_read") })
  }

  @Test func mountinfoFieldsAreUnescaped() {
    #expect(MountPoint.unescapeMountField("/mnt/a\\040b\\011c\\134d") == "/mnt/a b\tc\\d")
    #expect(MountPoint.unescapeMountField("/plain") == "/plain")
    #expect(MountPoint.unescapeMountField("/end\\04") == "/end\\04")
  }

  @Test func mountPointValidation() throws {
    let scratch = try Scratch("mp")
    defer { scratch.remove() }
    let dir = try scratch.directory("d")
    try #expect(MountPoint.validate(dir + "/../d") == dir)
    let file = scratch.file("f")
    #expect(FileManagerShim.touch(file))
    #expect(throws: VDiskError.self) { try MountPoint.validate(file) }
    do {
      _ = try MountPoint.validate(scratch.file("missing"))
      Issue.record("expected an error")
    } catch let e as VDiskError {
      #expect(e.kind == .notFound)
    }
    for mounted in ["/", "/proc"] {
      do {
        _ = try MountPoint.validate(mounted)
        Issue.record("expected \(mounted) to be refused")
      } catch let e as VDiskError {
        #expect(e.kind == .invalidArgument && e.detail.contains("already a mount point"))
      }
    }
    #expect(MountPoint.mountedDevice(at: "/proc") != nil)
    #expect(MountPoint.mountedDevice(at: dir) == nil)
  }

  @Test func readBuffersAreReusedPerThread() {
    let pool = ReadBufferPool(bufferSize: 4096)
    var first: UnsafeMutableRawPointer?
    pool.withBuffer(count: 100) { first = $0.baseAddress }
    #expect(first != nil)
    pool.withBuffer(count: 4096) { #expect($0.baseAddress == first && $0.count == 4096) }
    pool.withBuffer(count: 10) { outer in
      #expect(outer.baseAddress == first)
      pool.withBuffer(count: 10) { inner in
        #expect(inner.baseAddress != first && inner.count == 10)
        inner.storeBytes(of: 7, as: UInt8.self)
      }
    }
    pool.withBuffer(count: 8192) { #expect($0.count == 8192 && $0.baseAddress != first) }
    // After nesting the thread keeps one of the two buffers, and reuses it from then on.
    var kept: UnsafeMutableRawPointer?
    pool.withBuffer(count: 1) { kept = $0.baseAddress }
    pool.withBuffer(count: 1) { #expect($0.baseAddress == kept) }
  }
}

enum FileManagerShim {
  static func touch(_ path: String) -> Bool {
    let fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
    guard fd >= 0 else { return false }
    close(fd)
    return true
  }
}

@Suite struct ErrorLogLimiterTests {
  final class Clock: @unchecked Sendable {
    var now: UInt64 = 1_000_000_000_000
  }

  @Test func allowsABurstPerWindowThenCountsWhatItHeldBack() {
    let clock = Clock()
    let limiter = ErrorLogLimiter(burst: 3, windowSeconds: 10, now: { clock.now })
    let first = (0..<10).map { _ in limiter.admit() }
    #expect(first.map(\.log) == [true, true, true, false, false, false, false, false, false, false])
    #expect(first.allSatisfy { $0.suppressedBefore == 0 })
    clock.now += 5_000_000_000
    #expect(limiter.admit().log == false)
    clock.now += 6_000_000_000
    let next = limiter.admit()
    #expect(next.log)
    #expect(next.suppressedBefore == 8)
    #expect(limiter.admit().suppressedBefore == 0)
  }
}
