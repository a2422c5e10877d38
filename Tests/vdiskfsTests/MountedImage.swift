import Foundation
import TestSupport

/// A disk image mounted by the real `vdiskfs` binary (daemonized), unmounted by `unmount()`.
struct MountedImage {
  let mountpoint: String
  /// What the mount command printed on stderr (a notice such as "mounting read-only").
  var notice = ""
  var diskRaw: String { mountpoint + "/disk.raw" }

  /// Runs `vdiskfs IMAGE MNT ARGS…`, which returns once the mount is live. Read-only (`-o ro`)
  /// unless `writable` (then no `-o` at all: the mode is the format's default).
  /// `environment` is added to the daemon's (credentials of a remote store).
  static func mount(
    _ image: String, in scratch: Scratch, _ arguments: [String] = [], writable: Bool = false,
    environment: [String: String] = [:]
  ) throws -> MountedImage {
    let mnt = try scratch.directory("mnt-\(UUID().uuidString.prefix(8))")
    let mode = writable || arguments.contains("-o") ? [] : ["-o", "ro"]
    let variables = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    let r = try run("env", variables + ["timeout", "60", vdiskfsBinary, image, mnt] + mode + arguments)
    let mounted = MountedImage(mountpoint: mnt, notice: r.stderr)
    guard isMounted(mnt) else {
      throw CommandFailed(
        command: [vdiskfsBinary, image, mnt],
        result: CommandResult(status: 0, stdout: "", stderr: "not mounted"))
    }
    return mounted
  }

  /// Unmounts; falls back to a lazy unmount so that a failing test never leaves a mount behind.
  func unmount() {
    if (try? run("fusermount3", ["-u", mountpoint], check: false))?.status != 0 {
      _ = try? run("fusermount3", ["-u", "-z", mountpoint], check: false)
    }
    // The daemon exits after the unmount (writing back what it holds): wait for /proc/mounts to
    // agree and for the process to be gone, so that its image locks are released.
    for _ in 0..<50 where isMounted(mountpoint) { usleep(20_000) }
    waitForDaemonExit(mountpoint)
  }
}

/// `fusermount3 -u`, retried for up to 5 s while the mount is busy: tests run in parallel, and a
/// child another test spawns may hold an inherited descriptor under the mount for a moment.
/// Throws the last failure.
func unmountRetryingWhileBusy(_ mountpoint: String) throws {
  var result = try run("fusermount3", ["-u", mountpoint], check: false)
  for _ in 0..<50 where result.status != 0 && result.stderr.contains("busy") {
    usleep(100_000)
    result = try run("fusermount3", ["-u", mountpoint], check: false)
  }
  if result.status != 0 {
    throw CommandFailed(command: ["fusermount3", "-u", mountpoint], result: result)
  }
}

/// Waits (up to 10 s) until no vdiskfs process serves `mountpoint`.
func waitForDaemonExit(_ mountpoint: String) {
  for _ in 0..<500 {
    let r = try? run("pgrep", ["-f", "^\(vdiskfsBinary) .* \(mountpoint)( |$)"], check: false)
    if r?.status != 0 { return }
    usleep(20_000)
  }
}

/// Whether `path` is a mount point in /proc/mounts.
func isMounted(_ path: String) -> Bool {
  guard let text = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return false }
  return text.split(separator: "\n").contains {
    $0.split(separator: " ").dropFirst().first == Substring(path)
  }
}

/// `cmp` of two files; nil when equal, else cmp's message.
func compareFiles(_ a: String, _ b: String) throws -> String? {
  let r = try run("cmp", [a, b], check: false)
  return r.status == 0 ? nil : (r.stdout + r.stderr)
}

/// File metadata through stat(2).
func statFile(_ path: String) throws -> stat {
  var st = stat()
  guard stat(path, &st) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
  return st
}
