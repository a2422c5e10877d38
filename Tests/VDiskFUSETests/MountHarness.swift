import Foundation
import Logging
import Synchronization
import TestSupport
import VDiskCore
import VDiskFUSE

/// A chain mounted in-process: the session loop runs on its own thread; `stop` ends it and
/// makes sure nothing stays mounted (as a last resort `fusermount3 -u -z`).
final class MountedDisk: Sendable {
  let scratch: Scratch
  let layer: TestLayer
  let session: FUSESession
  let mountpoint: String
  private let loopState = LoopState()

  /// What the loop thread reports.
  private final class LoopState: Sendable {
    let finished = DispatchSemaphore(value: 0)
    let outcome = Mutex<Int32?>(nil)
    let thread = Mutex<pthread_t?>(nil)
  }

  var disk: String { mountpoint + "/disk.raw" }

  init(
    size: UInt64 = 64 << 20, segments: [TestLayer.Segment]? = nil, options: MountOptions = MountOptions(),
    signals: Bool = false
  ) throws {
    scratch = try Scratch("fuse")
    do {
      layer = try TestLayer(
        path: scratch.file("image"), size: size, segments: segments ?? standardSegments(size: size))
      mountpoint = try scratch.directory("mnt")
      var options = options
      options.fsname = layer.file.path
      session = try FUSESession(
        chain: LayerChain(top: layer), options: options, logger: Logger(label: "fuse-test"))
      if signals { try session.installSignalHandlers() }
      try session.mount(at: mountpoint)
    } catch {
      scratch.remove()
      throw error
    }
    let session = self.session
    let loopState = self.loopState
    let thread = Thread {
      loopState.thread.withLock { $0 = pthread_self() }
      let result = (try? session.loop()) ?? -1
      loopState.outcome.withLock { $0 = result }
      loopState.finished.signal()
    }
    thread.stackSize = 1 << 20
    thread.start()
  }

  /// Waits up to `seconds` for the loop to return; its result, or nil on timeout.
  func waitForLoop(seconds: Double = 10) -> Int32? {
    guard loopState.finished.wait(timeout: .now() + seconds) == .success else { return nil }
    loopState.finished.signal()  // later waits succeed too
    return loopState.outcome.withLock { $0 }
  }

  var loopPthread: pthread_t? { loopState.thread.withLock { $0 } }

  /// Whether /proc/mounts lists the mount point.
  var isListedInProcMounts: Bool {
    let text = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
    return text.split(separator: "\n").contains {
      $0.split(separator: " ").dropFirst().first == Substring(mountpoint)
    }
  }

  /// Ends the loop, unmounts, and removes the scratch directory. Returns false when the loop did
  /// not end in time or /proc/mounts still listed the mount (it is then forcibly detached).
  @discardableResult
  func stop() -> Bool {
    session.exit()
    session.unmount()
    let ended = waitForLoop() != nil
    let leftBehind = isListedInProcMounts
    if leftBehind || !ended {
      _ = try? run("fusermount3", ["-u", "-z", mountpoint], check: false)
    }
    scratch.remove()
    return ended && !leftBehind
  }
}

/// Thin POSIX helpers that report errno instead of throwing.
enum Posix {
  static func open(_ path: String, _ flags: Int32) -> (fd: Int32, errno: Int32) {
    let fd = Glibc.open(path, flags | O_CLOEXEC)
    return (fd, fd < 0 ? Glibc.errno : 0)
  }

  /// pread of `count` bytes at `offset`, looping on short reads until EOF; (bytes, errno).
  static func pread(_ fd: Int32, count: Int, at offset: UInt64) -> ([UInt8], Int32) {
    var bytes = [UInt8](repeating: 0, count: count)
    var done = 0
    var failure: Int32 = 0
    bytes.withUnsafeMutableBytes { buffer in
      while done < count, let base = buffer.baseAddress {
        let n = Glibc.pread(fd, base + done, count - done, off_t(offset) + off_t(done))
        if n < 0 {
          if Glibc.errno == EINTR { continue }
          failure = Glibc.errno
          return
        }
        if n == 0 { return }
        done += n
      }
    }
    bytes.removeLast(count - done)
    return (bytes, failure)
  }

  static func lseek(_ fd: Int32, _ offset: Int64, _ whence: Int32) -> (Int64, Int32) {
    let r = Glibc.lseek(fd, off_t(offset), whence)
    return (Int64(r), r < 0 ? Glibc.errno : 0)
  }
}

/// SEEK_DATA / SEEK_HOLE (Linux values; Swift's Glibc lacks them without _GNU_SOURCE).
let seekData: Int32 = 3
let seekHole: Int32 = 4

/// O_DIRECT on Linux x86_64/aarch64 differ (0o40000 / 0o200000); Swift's Glibc lacks it.
#if arch(x86_64)
  let oDirect: Int32 = 0o40000
#else
  let oDirect: Int32 = 0o200000
#endif
