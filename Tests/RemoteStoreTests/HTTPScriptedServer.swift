import Foundation
import TestSupport

/// A TCP server on 127.0.0.1 that answers each request with whatever `respond` makes of it (a
/// hostile server: bodies longer or shorter than announced, wrong ranges), then closes the
/// connection; a nil answer holds the connection silent until `stop()`. One thread, one
/// connection at a time. Call `stop()` in a `defer`.
final class HTTPScriptedServer: @unchecked Sendable {
  let port: Int
  private let listener: Int32
  private let finished = DispatchSemaphore(value: 0)
  private let stopping = DispatchSemaphore(value: 0)
  private var stopped = false

  var url: String { "http://127.0.0.1:\(port)/object" }

  init(respond: @escaping @Sendable (_ request: String) -> [UInt8]?) throws {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    self.listener = listener
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ready = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(listener, $0, length) == 0 && getsockname(listener, $0, &length) == 0
          && listen(listener, 16) == 0
      }
    }
    guard listener >= 0, ready else {
      if listener >= 0 { close(listener) }
      throw NginxError("scripted server: cannot listen: \(String(cString: strerror(errno)))")
    }
    port = Int(UInt16(bigEndian: address.sin_port))
    let finished = self.finished
    let stopping = self.stopping
    Thread.detachNewThread {
      defer { finished.signal() }
      while true {
        let client = accept(listener, nil, nil)
        guard client >= 0 else { return }
        defer { close(client) }
        guard let request = Self.readRequest(client) else { continue }
        guard let answer = respond(request) else {
          stopping.wait()
          stopping.signal()
          return
        }
        answer.withUnsafeBytes { bytes in
          guard let base = bytes.baseAddress else { return }
          var done = 0
          while done < bytes.count {
            let n = send(client, base + done, bytes.count - done, Int32(MSG_NOSIGNAL))
            if n <= 0 { break }
            done += n
          }
        }
      }
    }
  }

  func stop() {
    guard !stopped else { return }
    stopped = true
    stopping.signal()
    shutdown(listener, Int32(SHUT_RDWR))
    finished.wait()
    close(listener)
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
  static func answer(_ status: String, _ headers: [String], body: [UInt8] = []) -> [UInt8] {
    let head = (["HTTP/1.1 \(status)"] + headers + ["Connection: close", "", ""]).joined(separator: "\r\n")
    return Array(head.utf8) + body
  }

  /// The `first-last` of a request's `Range: bytes=first-last`.
  static func range(in request: String) -> (UInt64, UInt64)? {
    guard
      let line = request.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("range: bytes=") })
    else { return nil }
    let spec = line.dropFirst("range: bytes=".count).split(separator: "-")
    guard spec.count == 2, let first = UInt64(spec[0]), let last = UInt64(spec[1]) else { return nil }
    return (first, last)
  }
}
