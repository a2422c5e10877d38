import Foundation
import TestSupport

/// A read-write mount by the real `vdiskfs IMAGE MNT` daemon that a test ends with `kill -9`
/// (`WriteMountRuns.crash`, `CrashCampaignMountTests`), with `disk.raw` open for positional I/O.
///
/// `kill()` only sends SIGKILL (safe from any thread, at any moment); `tearDown()` (idempotent,
/// call it in a `defer`) kills the daemon if nothing did, closes the file, unmounts lazily and
/// waits until the daemon is gone, so that no path leaves a mount or a process behind and the
/// image is free for QEMU afterwards.
final class KillableMount: @unchecked Sendable {
  let image: String
  let mountpoint: String
  /// The daemon's process id.
  let pid: pid_t
  let disk: PositionalFile
  private var tornDown = false

  /// Mounts `image` on a new directory `mnt-LABEL` of `scratch` with `arguments` after the
  /// image and mount point (e.g. `--format raw`).
  init(_ image: String, scratch: Scratch, label: String, arguments: [String] = []) throws {
    self.image = image
    let mnt = try scratch.directory("mnt-\(label)")
    mountpoint = mnt
    try run("timeout", ["60", vdiskfsBinary, image, mnt] + arguments)
    do {
      pid = try WriteMountRuns.daemonPID(image: image, mnt: mnt)
      disk = try PositionalFile(mnt + "/disk.raw")
    } catch {
      _ = try? run("pkill", ["-KILL", "-f", "--", "^\(vdiskfsBinary) \(image) \(mnt)"], check: false)
      _ = try? run("fusermount3", ["-u", "-z", mnt], check: false)
      waitForDaemonExit(mnt)
      throw error
    }
  }

  /// SIGKILL to the daemon. Operations in flight on disk.raw then fail (ENOTCONN) once the
  /// kernel sees /dev/fuse closed.
  func kill() {
    _ = Glibc.kill(pid, SIGKILL)
  }

  /// Kills the daemon (again: harmless), closes disk.raw, detaches the mount and waits (up to
  /// 10 s) for the daemon to be gone.
  func tearDown() {
    guard !tornDown else { return }
    tornDown = true
    kill()
    disk.close()
    _ = try? run("fusermount3", ["-u", "-z", mountpoint], check: false)
    waitForDaemonExit(mountpoint)
  }

  deinit { tearDown() }
}
