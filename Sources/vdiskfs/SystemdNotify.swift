import Foundation
import Logging

#if canImport(Glibc)
  import Glibc
#endif

/// The service manager's readiness protocol, spoken directly (no libsystemd): newline-separated
/// `VARIABLE=value` assignments sent as one datagram to the `AF_UNIX` socket that `$NOTIFY_SOCKET`
/// names. sd_notify(3): "If the first character of $NOTIFY_SOCKET is "@", the string is
/// understood as Linux abstract namespace socket." systemd's `Type=notify` counts a unit as
/// started on `READY=1`, shows `STATUS=` in `systemctl status`, and takes `MAINPID=` as the
/// process to supervise (accepted only from the main process unless `NotifyAccess=all`).
///
/// Delivery is best effort, as with sd_notify: a failure is logged and never stops the mount.
struct SystemdNotify: Sendable {
  /// The bytes of `sun_path`: the socket's path, or for an abstract socket a NUL and its name.
  private let path: [UInt8]
  private let abstract: Bool

  /// Nil unless `name` is an absolute path or an `@` abstract name that fits `sun_path`.
  init?(socket name: String?) {
    guard let name, name.count > 1, name.hasPrefix("/") || name.hasPrefix("@") else { return nil }
    var bytes = Array(name.utf8)
    abstract = bytes[0] == UInt8(ascii: "@")
    if abstract { bytes[0] = 0 }
    guard bytes.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) else { return nil }
    path = bytes
  }

  /// The notifier for `$NOTIFY_SOCKET`, or nil when vdiskfs does not run under a service manager.
  static func fromEnvironment() -> SystemdNotify? {
    SystemdNotify(socket: ProcessInfo.processInfo.environment["NOTIFY_SOCKET"])
  }

  /// Sends `assignments` (`READY=1`, `STATUS=…`) in one datagram; returns the errno on failure.
  @discardableResult
  func send(_ assignments: [String]) -> Int32? {
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return errno }
    defer { close(fd) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { sunPath in
      for (i, byte) in path.enumerated() { sunPath[i] = byte }
    }
    // sun_path follows sun_family; a path counts its terminating NUL, an abstract name does not.
    let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count + (abstract ? 0 : 1))
    let message = Array(assignments.joined(separator: "\n").utf8)
    let sent = withUnsafePointer(to: &address) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
        sendto(fd, message, message.count, Int32(MSG_NOSIGNAL), socketAddress, length)
      }
    }
    return sent == message.count ? nil : (sent < 0 ? errno : EMSGSIZE)
  }

  /// Sends `READY=1` with `status` once `diskRaw` opens and reads through the kernel, that is once
  /// the session loop serves requests (a mount that exists but is not served yet would block the
  /// open). Runs on its own thread so that the caller can enter the loop. `mainPID` goes with it
  /// when vdiskfs daemonized, so that a manager allowing it follows the daemon, not its parent.
  func announceReadyWhenServing(diskRaw: String, status: String, mainPID: pid_t?, logger: Logger) {
    Thread.detachNewThread {
      let fd = open(diskRaw, O_RDONLY | O_CLOEXEC)
      guard fd >= 0 else {
        let reason = String(cString: strerror(errno))
        logger.error("\(diskRaw) cannot be opened (\(reason)); not telling the service manager READY=1")
        send(["STATUS=\(diskRaw) cannot be opened: \(reason)"])
        return
      }
      // The first byte travels through FUSE; an I/O error there is the image's, not the mount's.
      var byte: UInt8 = 0
      if read(fd, &byte, 1) < 0 {
        logger.warning("reading the first byte of \(diskRaw) failed: \(String(cString: strerror(errno)))")
      }
      close(fd)
      var message = ["READY=1", "STATUS=\(status)"]
      if let mainPID { message.append("MAINPID=\(mainPID)") }
      if let failure = send(message) {
        logger.warning("cannot notify the service manager: \(String(cString: strerror(failure)))")
      }
    }
  }

  /// `STATUS=` text while mounted: `Serving vm.qcow2 (qcow2, read-only) at /mnt/vm`.
  static func servingStatus(image: String, format: String, readOnly: Bool, mountpoint: String) -> String {
    "Serving \(image) (\(format), \(readOnly ? "read-only" : "read-write")) at \(mountpoint)"
  }
}
