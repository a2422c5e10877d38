import Foundation

/// The outcome of running a command.
public struct CommandResult: Sendable {
  public var status: Int32
  public var stdout: String
  public var stderr: String
  public init(status: Int32, stdout: String, stderr: String) {
    self.status = status
    self.stdout = stdout
    self.stderr = stderr
  }
}

public struct CommandFailed: Error, CustomStringConvertible {
  public var command: [String]
  public var result: CommandResult
  public init(command: [String], result: CommandResult) {
    self.command = command
    self.result = result
  }
  public var description: String {
    "command failed (\(result.status)): \(command.joined(separator: " "))\n\(result.stderr)\(result.stdout)"
  }
}

/// Runs `executable` (looked up in PATH) with `arguments`; throws `CommandFailed` on a non-zero
/// exit unless `check` is false. Standard output and error are collected (keep them small).
///
/// Built on posix_spawn + poll + waitpid rather than Foundation's Process, whose termination
/// monitoring was seen to miss child exits when many tests spawn processes in parallel. Children
/// start with an empty signal mask and default dispositions, whatever thread spawns them, and
/// with no descriptor of ours but their standard input, output and error: see `withSpawnLock`.
@discardableResult
public func run(_ executable: String, _ arguments: [String], check: Bool = true, input: Data? = nil) throws
  -> CommandResult
{
  var outPipe: [Int32] = [-1, -1]
  var errPipe: [Int32] = [-1, -1]
  var inPipe: [Int32] = [-1, -1]
  // Pipes are made and spawned under the spawn lock (pipe2 is not imported): no other spawn can
  // slip in between pipe() and FD_CLOEXEC and inherit them.
  spawnLock.lock()
  var locked = true
  defer { if locked { spawnLock.unlock() } }
  guard pipe(&outPipe) == 0, pipe(&errPipe) == 0, pipe(&inPipe) == 0 else {
    throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
  }
  for fd in outPipe + errPipe + inPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  if input != nil {
    posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
  }
  posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
  posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
  let closing = spawnCloseFrom(&actions, 3)
  guard closing == 0 else {
    (outPipe + errPipe + inPipe).forEach { close($0) }
    throw POSIXError(POSIXErrorCode(rawValue: closing) ?? .EIO)
  }

  var attributes = posix_spawnattr_t()
  posix_spawnattr_init(&attributes)
  defer { posix_spawnattr_destroy(&attributes) }
  var emptyMask = sigset_t()
  sigemptyset(&emptyMask)
  var defaults = sigset_t()
  sigemptyset(&defaults)
  for signal in [SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT, SIGUSR1, SIGUSR2] { sigaddset(&defaults, signal) }
  posix_spawnattr_setsigmask(&attributes, &emptyMask)
  posix_spawnattr_setsigdefault(&attributes, &defaults)
  posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

  var environment = ProcessInfo.processInfo.environment
  environment["PATH"] = (environment["PATH"] ?? "/usr/bin:/bin") + ":/usr/sbin:/sbin:/usr/local/sbin"
  let argv = ([executable] + arguments).map { strdup($0) } + [nil]
  let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
  defer {
    argv.forEach { free($0) }
    envp.forEach { free($0) }
  }
  // posix_spawnp searches the PATH of this process; search the extended PATH ourselves.
  let path =
    executable.contains("/")
    ? executable
    : (environment["PATH"] ?? "").split(separator: ":").map { "\($0)/\(executable)" }
      .first { access($0, X_OK) == 0 } ?? executable
  var pid: pid_t = 0
  let spawned = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
  spawnLock.unlock()
  locked = false
  close(outPipe[1])
  close(errPipe[1])
  close(inPipe[0])
  guard spawned == 0 else {
    close(outPipe[0])
    close(errPipe[0])
    close(inPipe[1])
    throw CommandFailed(
      command: [executable] + arguments,
      result: CommandResult(
        status: 127, stdout: "", stderr: "cannot run \(executable): \(String(cString: strerror(spawned)))"))
  }
  if let input {
    input.withUnsafeBytes { buffer in
      var done = 0
      while done < buffer.count {
        let n = write(inPipe[1], buffer.baseAddress.map { $0 + done }, buffer.count - done)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        done += n
      }
    }
  }
  close(inPipe[1])
  let (out, err) = drain(outPipe[0], errPipe[0])
  var status: Int32 = 0
  while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
  // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import.
  let exitStatus = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
  let result = CommandResult(
    status: exitStatus, stdout: String(decoding: out, as: UTF8.self),
    stderr: String(decoding: err, as: UTF8.self))
  if check && result.status != 0 {
    throw CommandFailed(command: [executable] + arguments, result: result)
  }
  return result
}

/// Runs `body`, which starts a child process (`Process.run()`, a posix_spawn of a fixture's
/// own), under the lock `run` spawns under. Spawn only so, with every descriptor but 0, 1 and 2
/// closed in the child before it executes (`run` and `NginxServer` add
/// `posix_spawn_file_actions_addclosefrom_np`; Foundation's Process closes them one by one).
///
/// Why: tests run in parallel threads, and a child gets a copy of every descriptor the process
/// holds when it is cloned, other tests' included. A mount is busy (`fusermount3 -u` fails with
/// EBUSY) while any process holds a file under it. A descriptor opened without close-on-exec
/// (`open` without O_CLOEXEC, Foundation's FileHandle, `accept`) lives as long as the child: a
/// vdiskfs daemon another test starts keeps this test's disk.raw open until that test unmounts.
/// A close-on-exec one is closed by execve only after posix_spawn has returned (the kernel lets
/// the vfork parent go on as soon as the child has its new memory, before it closes those
/// descriptors), and on disk.raw that close is a FUSE FLUSH, which vdiskfs answers by syncing
/// the image: for that long the child still held the file another test had just closed and was
/// unmounting. Closed by the spawn itself, every copy is gone before posix_spawn returns, and
/// under this lock before any other test's `fusermount3 -u` starts.
///
/// The price: a spawn waits, holding the lock, for the FLUSH of every FUSE file any test has
/// open at that moment (a child paid it at exec before). A test that stops its daemon (SIGSTOP)
/// while a file under its mount is open must not spawn until it continues or kills it.
public func withSpawnLock<T>(_ body: () throws -> T) rethrows -> T {
  spawnLock.lock()
  defer { spawnLock.unlock() }
  return try body()
}

let spawnLock = NSLock()

/// glibc 2.34's `posix_spawn_file_actions_addclosefrom_np` (the child closes every descriptor
/// from `from` up after the other file actions), which Swift's Glibc module does not show (it is
/// declared under `__USE_MISC` with a name the importer skips).
@_silgen_name("posix_spawn_file_actions_addclosefrom_np")
func spawnCloseFrom(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ from: Int32) -> Int32

/// Reads two pipes to end-of-file without letting either fill up; closes both.
private func drain(_ a: Int32, _ b: Int32) -> ([UInt8], [UInt8]) {
  var outputs: [[UInt8]] = [[], []]
  var fds = [
    pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0),
  ]
  var open = 2
  var buffer = [UInt8](repeating: 0, count: 65536)
  while open > 0 {
    if poll(&fds, nfds_t(fds.count), -1) < 0 {
      if errno == EINTR { continue }
      break
    }
    for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
      let n = buffer.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, $0.count) }
      if n > 0 {
        outputs[i] += buffer[0..<n]
      } else if n == 0 || errno != EINTR {
        close(fds[i].fd)
        fds[i].fd = -1
        open -= 1
      }
    }
  }
  return (outputs[0], outputs[1])
}

/// Runs a shell snippet with bash -c.
@discardableResult
public func sh(_ script: String, check: Bool = true) throws -> CommandResult {
  try run("bash", ["-c", script], check: check)
}

/// True when this process runs as root (mount and loop tests need it; in CI they must run).
public var isRoot: Bool { getuid() == 0 }

/// True when FUSE mounts can be attempted here.
public var canMountFUSE: Bool { isRoot && FileManager.default.fileExists(atPath: "/dev/fuse") }

/// Whether mount and loop-device tests run. Under CI (or VDISKFS_REQUIRE_MOUNT_TESTS=1) they are
/// enabled even when the environment looks unable, so that they fail loudly instead of being
/// skipped; elsewhere (a non-root developer) they are skipped.
public var mountTestsEnabled: Bool {
  canMountFUSE || ProcessInfo.processInfo.environment["CI"] != nil
    || ProcessInfo.processInfo.environment["VDISKFS_REQUIRE_MOUNT_TESTS"] == "1"
}

/// Loop devices are few here (/dev/loop0–7, and no udev to make more): tests that attach them
/// take this gate, so that parallel tests never run out.
public let loopDeviceGate = DispatchSemaphore(value: 2)
