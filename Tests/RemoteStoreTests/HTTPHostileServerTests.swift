import Foundation
import HTTPStore
import RemoteStore
import TestSupport
import Testing
import VDiskCore

/// The HTTP store against servers that lie: more or fewer bytes than announced, other ranges
/// than asked, whole objects for range requests, errors and silence. Nothing may overflow the
/// caller's buffer, and every lie is a failure of the right kind.
@Suite struct HTTPHostileServerTests {
  static let size: UInt64 = 1000

  /// A server that opens honestly (HEAD and the 0-0 probe) and answers other ranges with `lie`.
  static func server(lie: @escaping @Sendable (_ first: UInt64, _ last: UInt64) -> [UInt8]?) throws
    -> HTTPScriptedServer
  {
    try HTTPScriptedServer { request in
      let common = ["ETag: \"v1\"", "Accept-Ranges: bytes"]
      if request.hasPrefix("HEAD ") {
        return HTTPScriptedServer.answer("200 OK", common + ["Content-Length: \(size)"])
      }
      guard let (first, last) = HTTPScriptedServer.range(in: request) else {
        return HTTPScriptedServer.answer("400 Bad Request", ["Content-Length: 0"])
      }
      if first == 0 && last == 0 {
        return HTTPScriptedServer.answer(
          "206 Partial Content", common + ["Content-Range: bytes 0-0/\(size)", "Content-Length: 1"], body: [7]
        )
      }
      return lie(first, last)
    }
  }

  static func options(timeout: Int = 10) -> RemoteOptions {
    var options = RemoteOptions()
    options.timeoutSeconds = timeout
    return options
  }

  /// Fetches 100 bytes at 100 into the middle of a guarded buffer: the guard bytes must survive.
  static func fetchGuarded(_ object: any RemoteObject) throws -> Int {
    var buffer = [UInt8](repeating: 0xAB, count: 300)
    defer {
      #expect(buffer[0..<100].allSatisfy { $0 == 0xAB } && buffer[200...].allSatisfy { $0 == 0xAB })
    }
    return try buffer.withUnsafeMutableBytes {
      try object.fetch(into: UnsafeMutableRawBufferPointer(rebasing: $0[100..<200]), at: 100)
    }
  }

  static func partial(
    _ first: UInt64, _ last: UInt64, body: Int, etag: String = "\"v1\"", total: UInt64 = size
  )
    -> [UInt8]
  {
    HTTPScriptedServer.answer(
      "206 Partial Content",
      ["ETag: \(etag)", "Content-Range: bytes \(first)-\(last)/\(total)", "Content-Length: \(body)"],
      body: [UInt8](repeating: 0x55, count: body))
  }

  func expectFetch(
    _ kind: RemoteFailure.Kind, timeout: Int = 10, lie: @escaping @Sendable (UInt64, UInt64) -> [UInt8]?
  )
    throws
  {
    let server = try Self.server(lie: lie)
    defer { server.stop() }
    let object = try HTTPStore.open(server.url, writable: false, options: Self.options(timeout: timeout))
    #expect(object.version == RemoteVersion(size: Self.size, tag: "\"v1\""))
    let failure = #expect(throws: RemoteFailure.self) { try Self.fetchGuarded(object) }
    #expect(failure?.kind == kind, "\(failure.map { "\($0)" } ?? "no failure")")
  }

  @Test func anHonestServerIsRead() throws {
    let server = try Self.server { first, last in Self.partial(first, last, body: Int(last - first + 1)) }
    defer { server.stop() }
    let object = try HTTPStore.open(server.url, writable: false, options: Self.options())
    #expect(try Self.fetchGuarded(object) == 100)
  }

  @Test func moreBytesThanAskedNeverOverflow() throws {
    try expectFetch(.final(.io)) { first, last in Self.partial(first, last, body: 5000) }
  }

  @Test func fewerBytesThanAnnouncedAreTransient() throws {
    try expectFetch(.transient) { first, last in
      Array(Self.partial(first, last, body: 100).dropLast(50))
    }
  }

  @Test func anotherRangeThanAskedIsRefused() throws {
    try expectFetch(.final(.io)) { first, last in Self.partial(first + 1, last + 1, body: 100) }
  }

  @Test func anotherTotalOrETagIsAChange() throws {
    try expectFetch(.changed) { first, last in Self.partial(first, last, body: 100, total: 2000) }
    try expectFetch(.changed) { first, last in Self.partial(first, last, body: 100, etag: "\"v2\"") }
  }

  @Test func theWholeObjectForARangeIsRefused() throws {
    try expectFetch(.final(.io)) { _, _ in
      HTTPScriptedServer.answer(
        "200 OK", ["ETag: \"v1\"", "Content-Length: \(Self.size)"],
        body: [UInt8](repeating: 1, count: Int(Self.size)))
    }
  }

  @Test func endlessHeadersStopTheTransfer() throws {
    try expectFetch(.final(.io)) { first, last in
      let filler = (0..<4000).map { "X-Filler-\($0): \(String(repeating: "f", count: 100))" }
      return HTTPScriptedServer.answer(
        "206 Partial Content",
        ["ETag: \"v1\"", "Content-Range: bytes \(first)-\(last)/\(Self.size)", "Content-Length: 100"]
          + filler,
        body: [UInt8](repeating: 0x55, count: 100))
    }
  }

  @Test func redirectsAreFollowedUpToFive() throws {
    let server = try HTTPScriptedServer { request in
      let path = request.split(separator: " ").dropFirst().first ?? ""
      if let hop = Int(path.dropFirst("/hop".count)), path.hasPrefix("/hop"), hop < 9 {
        return HTTPScriptedServer.answer("302 Found", ["Location: /hop\(hop + 1)", "Content-Length: 0"])
      }
      guard path == "/object" else {
        return HTTPScriptedServer.answer("404 Not Found", ["Content-Length: 0"])
      }
      if request.hasPrefix("HEAD ") {
        return HTTPScriptedServer.answer("200 OK", ["Content-Length: \(Self.size)", "ETag: \"v1\""])
      }
      guard let (first, last) = HTTPScriptedServer.range(in: request) else { return nil }
      return Self.partial(first, last, body: Int(last - first + 1))
    }
    defer { server.stop() }
    let base = "http://127.0.0.1:\(server.port)"
    // /hop5 -> /hop9, five redirects, then a 404 at the end of the chain: followed.
    let followed = #expect(throws: VDiskError.self) {
      try HTTPStore.open(base + "/hop4", writable: false, options: Self.options())
    }
    #expect(followed?.kind == .notFound)
    // Six redirects: refused.
    let tooMany = #expect(throws: VDiskError.self) {
      try HTTPStore.open(base + "/hop3", writable: false, options: Self.options())
    }
    #expect(tooMany?.kind == .io)
    #expect(tooMany?.detail.contains("redirect") == true)
  }

  @Test func serverErrorsAreTransient() throws {
    try expectFetch(.transient) { _, _ in HTTPScriptedServer.answer("503 Busy", ["Content-Length: 0"]) }
  }

  @Test func aSilentServerTimesOut() throws {
    let start = ContinuousClock.now
    try expectFetch(.transient, timeout: 1) { _, _ in nil }
    #expect(ContinuousClock.now - start < .seconds(8))
  }

  @Test func anOversizedProbeAnswerFailsTheOpen() throws {
    let server = try HTTPScriptedServer { request in
      if request.hasPrefix("HEAD ") {
        return HTTPScriptedServer.answer("200 OK", ["Content-Length: 1000", "ETag: \"x\""])
      }
      return Self.partial(0, 0, body: 5000)
    }
    defer { server.stop() }
    let error = #expect(throws: VDiskError.self) {
      try HTTPStore.open(server.url, writable: false, options: Self.options())
    }
    #expect(error?.kind == .io)
  }
}
