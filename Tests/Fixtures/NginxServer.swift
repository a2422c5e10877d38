import Foundation
import Synchronization

/// An nginx (Debian `nginx-light`, /usr/sbin/nginx) serving a temporary folder on
/// 127.0.0.1:<free port>, for the HTTP store's tests: one process (`master_process off`), our
/// child, with its own config, logs and temp paths in a scratch folder. `ranges: false` makes it
/// ignore Range headers (`max_ranges 0`); `tls: true` serves HTTPS with a self-signed
/// certificate for 127.0.0.1 made by openssl now. Call `stop()` in a `defer`: it kills the
/// process, reaps it and removes the folder. A missing nginx or openssl makes `init` throw: the
/// test fails, it does not skip.
public final class NginxServer: Sendable {
  /// The folder served at `/`.
  public let root: String
  public let port: Int
  /// `http://127.0.0.1:PORT` (or https).
  public let baseURL: String
  private let scratch: Scratch
  private let pid = Mutex<pid_t?>(nil)

  public static let binary = "/usr/sbin/nginx"

  public init(ranges: Bool = true, tls: Bool = false) throws {
    scratch = try Scratch("nginx")
    root = try scratch.directory("www")
    var started: (pid_t, Int)?
    do {
      guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
        throw NginxError("\(Self.binary) is missing (apt-get install nginx-light, or make deps)")
      }
      if tls {
        try run(
          "openssl",
          [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", scratch.file("key.pem"), "-out",
            scratch.file("cert.pem"),
          ])
      }
      // A port picked free can be taken before nginx binds it: try a few.
      var lastError: Error?
      for _ in 0..<5 where started == nil {
        let port = try Self.freePort()
        do {
          started = (
            try Self.launch(scratch: scratch, root: root, port: port, ranges: ranges, tls: tls), port
          )
        } catch {
          lastError = error
        }
      }
      guard let started else { throw lastError ?? NginxError("nginx did not start") }
      self.port = started.1
      pid.withLock { $0 = started.0 }
    } catch {
      scratch.remove()
      throw error
    }
    baseURL = "\(tls ? "https" : "http")://127.0.0.1:\(port)"
  }

  deinit { stop() }

  /// The URL of `name` in `root`.
  public func url(_ name: String) -> String { baseURL + "/" + name }

  /// Writes `bytes` to `name` in `root`.
  public func put(_ name: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: root + "/" + name))
  }

  /// Kills nginx (TERM, then KILL after 5 s), reaps it, removes the folder. Idempotent.
  public func stop() {
    if let child = pid.withLock({ state -> pid_t? in
      defer { state = nil }
      return state
    }) {
      Self.terminate(child)
    }
    scratch.remove()
  }

  private static func launch(scratch: Scratch, root: String, port: Int, ranges: Bool, tls: Bool) throws
    -> pid_t
  {
    let dir = scratch.path
    let listen =
      tls
      ? "listen 127.0.0.1:\(port) ssl; ssl_certificate \(dir)/cert.pem; ssl_certificate_key \(dir)/key.pem;"
      : "listen 127.0.0.1:\(port);"
    let config = """
      daemon off; master_process off; pid \(dir)/nginx.pid; error_log \(dir)/error.log;
      events { worker_connections 256; }
      http {
        access_log off; default_type application/octet-stream;
        client_body_temp_path \(dir)/body; proxy_temp_path \(dir)/proxy; fastcgi_temp_path \(dir)/fastcgi;
        uwsgi_temp_path \(dir)/uwsgi; scgi_temp_path \(dir)/scgi;
        server { \(listen) root \(root); \(ranges ? "" : "max_ranges 0;") }
      }

      """
    try config.write(toFile: dir + "/nginx.conf", atomically: true, encoding: .utf8)
    let child = try spawn([binary, "-p", dir, "-c", dir + "/nginx.conf", "-e", dir + "/error.log"])
    // Ready when the port accepts a connection; failed if the process is gone first.
    let deadline = Date().addingTimeInterval(10)
    while Date() < deadline {
      var status: Int32 = 0
      if waitpid(child, &status, WNOHANG) == child {
        let log = (try? String(contentsOfFile: dir + "/error.log", encoding: .utf8)) ?? ""
        throw NginxError("nginx exited at start (status \(status)): \(log)")
      }
      if canConnect(port: port) { return child }
      usleep(20_000)
    }
    terminate(child)
    throw NginxError("nginx did not listen on 127.0.0.1:\(port) within 10 s")
  }

  /// posix_spawn with /dev/null for stdio and every other descriptor closed in the child (it
  /// must not keep another test's pipe or file open), under `withSpawnLock`.
  private static func spawn(_ argv: [String]) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    for fd: Int32 in [0, 1, 2] { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_RDWR, 0) }
    guard spawnCloseFrom(&actions, 3) == 0 else {
      throw NginxError("posix_spawn_file_actions_addclosefrom_np failed")
    }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var emptyMask = sigset_t()
    sigemptyset(&emptyMask)
    var defaults = sigset_t()
    sigfillset(&defaults)
    posix_spawnattr_setsigmask(&attributes, &emptyMask)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let cArgs = argv.map { strdup($0) } + [nil]
    defer { cArgs.forEach { free($0) } }
    var child: pid_t = 0
    let result = withSpawnLock { posix_spawn(&child, argv[0], &actions, &attributes, cArgs, environ) }
    guard result == 0 else { throw NginxError("cannot run \(argv[0]): \(String(cString: strerror(result)))") }
    return child
  }

  private static func terminate(_ child: pid_t) {
    kill(child, SIGTERM)
    var status: Int32 = 0
    for _ in 0..<250 {
      let reaped = waitpid(child, &status, WNOHANG)
      if reaped == child || (reaped < 0 && errno == ECHILD) { return }
      usleep(20_000)
    }
    kill(child, SIGKILL)
    while waitpid(child, &status, 0) < 0 && errno == EINTR {}
  }

  /// A TCP port on 127.0.0.1 nothing listens on now (the kernel's pick).
  public static func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw NginxError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var address = loopback(port: 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
      }
    }
    guard bound else { throw NginxError("bind: \(String(cString: strerror(errno)))") }
    return Int(UInt16(bigEndian: address.sin_port))
  }

  static func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = loopback(port: port)
    return withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
      }
    }
  }

  private static func loopback(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    return address
  }
}

public struct NginxError: Error, CustomStringConvertible, Sendable {
  public var description: String
  public init(_ description: String) { self.description = description }
}
