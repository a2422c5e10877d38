import Foundation
import Synchronization

/// A TCP server on 127.0.0.1 that answers each request with whatever its script makes of it (a
/// hostile server: bodies longer or shorter than announced, wrong ranges, answers that stall or
/// trickle), then closes the connection. Each connection is served on a thread of its own, so
/// that one held connection does not stop the next request (a mount retries on a new one).
/// `stop()` (call it in a `defer`) ends every held or trickling answer, closes every connection
/// and waits for the threads.
// @unchecked: every stored property is a constant; the state is behind its Mutex.
public final class HTTPScriptedServer: @unchecked Sendable {
  /// What is done with one connection after its request was read.
  public enum Step: Sendable {
    /// Sends these bytes.
    case send([UInt8])
    /// Sends these bytes one at a time, one per `interval`.
    case trickle([UInt8], interval: Duration)
    /// Sends nothing for this long (cut short by `stop()`).
    case pause(Duration)
    /// Sends nothing until `stop()`.
    case hold
  }

  public let port: Int
  private let listener: Int32
  private let threads = DispatchGroup()
  private let state = Mutex(State())

  private struct State {
    var stopped = false
    var clients: Set<Int32> = []
  }

  public var url: String { "http://127.0.0.1:\(port)/object" }

  /// A server that sends `respond(request)` and closes; a nil answer holds the connection
  /// silent until `stop()`.
  public convenience init(respond: @escaping @Sendable (_ request: String) -> [UInt8]?) throws {
    try self.init(script: { request in respond(request).map { [.send($0)] } ?? [.hold] })
  }

  /// A server that runs `script(request)`'s steps for each request, then closes the connection.
  public init(script: @escaping @Sendable (_ request: String) -> [Step]) throws {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    self.listener = listener
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ready = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(listener, $0, length) == 0 && getsockname(listener, $0, &length) == 0
          && listen(listener, 64) == 0
      }
    }
    guard listener >= 0, ready else {
      if listener >= 0 { close(listener) }
      throw NginxError("scripted server: cannot listen: \(String(cString: strerror(errno)))")
    }
    port = Int(UInt16(bigEndian: address.sin_port))
    threads.enter()
    Thread.detachNewThread { [self] in
      defer { threads.leave() }
      while true {
        let client = accept(listener, nil, nil)
        guard client >= 0 else {
          if errno == EINTR { continue }
          return
        }
        let admitted = state.withLock { state -> Bool in
          guard !state.stopped else { return false }
          state.clients.insert(client)
          return true
        }
        guard admitted else {
          close(client)
          return
        }
        threads.enter()
        Thread.detachNewThread { [self] in
          defer {
            state.withLock { _ = $0.clients.remove(client) }
            close(client)
            threads.leave()
          }
          guard let request = Self.readRequest(client) else { return }
          for step in script(request) {
            guard run(step, on: client) else { return }
          }
        }
      }
    }
  }

  deinit { stop() }

  /// Ends every answer, closes the listener and every connection, waits for the threads.
  /// Idempotent.
  public func stop() {
    let clients = state.withLock { state -> Set<Int32>? in
      guard !state.stopped else { return nil }
      state.stopped = true
      return state.clients
    }
    guard let clients else { return }
    shutdown(listener, Int32(SHUT_RDWR))
    for client in clients { shutdown(client, Int32(SHUT_RDWR)) }
    threads.wait()
    close(listener)
  }

  private var isStopped: Bool { state.withLock { $0.stopped } }

  /// One step on `client`; false when the connection is done (closed by the peer, or stopping).
  private func run(_ step: Step, on client: Int32) -> Bool {
    switch step {
    case .send(let bytes): return Self.send(bytes, to: client)
    case .trickle(let bytes, let interval):
      for byte in bytes {
        guard Self.send([byte], to: client), idle(interval) else { return false }
      }
      return true
    case .pause(let duration): return idle(duration)
    case .hold: return idle(.seconds(86400))
    }
  }

  /// Sleeps `duration` in small steps; false if the server is stopped meanwhile.
  private func idle(_ duration: Duration) -> Bool {
    let end = ContinuousClock.now + duration
    while ContinuousClock.now < end {
      if isStopped { return false }
      usleep(10_000)
    }
    return !isStopped
  }

  private static func send(_ bytes: [UInt8], to client: Int32) -> Bool {
    bytes.withUnsafeBytes { bytes in
      guard let base = bytes.baseAddress else { return true }
      var done = 0
      while done < bytes.count {
        let n = Glibc.send(client, base + done, bytes.count - done, Int32(MSG_NOSIGNAL))
        if n <= 0 { return false }
        done += n
      }
      return true
    }
  }

  /// The request head (up to the blank line), at most 64 KiB.
  private static func readRequest(_ fd: Int32) -> String? {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while bytes.count < 65536 {
      let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
      guard n > 0 else { return nil }
      bytes += chunk[0..<n]
      if bytes.count >= 4, Array(bytes.suffix(4)) == Array("\r\n\r\n".utf8) { break }
    }
    return String(decoding: bytes, as: UTF8.self)
  }

  /// An answer: the status line, `headers`, Connection: close, then `body`.
  public static func answer(_ status: String, _ headers: [String], body: [UInt8] = []) -> [UInt8] {
    let head = (["HTTP/1.1 \(status)"] + headers + ["Connection: close", "", ""]).joined(separator: "\r\n")
    return Array(head.utf8) + body
  }

  /// The `first-last` of a request's `Range: bytes=first-last`.
  public static func range(in request: String) -> (UInt64, UInt64)? {
    guard
      let line = request.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("range: bytes=") })
    else { return nil }
    let spec = line.dropFirst("range: bytes=".count).split(separator: "-")
    guard spec.count == 2, let first = UInt64(spec[0]), let last = UInt64(spec[1]) else { return nil }
    return (first, last)
  }
}
