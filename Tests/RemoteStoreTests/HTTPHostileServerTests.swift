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
    try server(steps: steps(lie))
  }

  /// `lie`'s answer as steps; nil: silence until the server stops.
  static func steps(_ lie: @escaping @Sendable (UInt64, UInt64) -> [UInt8]?)
    -> @Sendable (UInt64, UInt64) -> [HTTPScriptedServer.Step]
  {
    { first, last in lie(first, last).map { [.send($0)] } ?? [.hold] }
  }

  /// A server that opens honestly and answers other ranges with the steps `steps` gives.
  static func server(
    steps: @escaping @Sendable (_ first: UInt64, _ last: UInt64) -> [HTTPScriptedServer.Step]
  )
    throws -> HTTPScriptedServer
  {
    try HTTPScriptedServer { request -> [HTTPScriptedServer.Step] in
      let common = ["ETag: \"v1\"", "Accept-Ranges: bytes"]
      if request.hasPrefix("HEAD ") {
        return [.send(HTTPScriptedServer.answer("200 OK", common + ["Content-Length: \(size)"]))]
      }
      guard let (first, last) = HTTPScriptedServer.range(in: request) else {
        return [.send(HTTPScriptedServer.answer("400 Bad Request", ["Content-Length: 0"]))]
      }
      if first == 0 && last == 0 {
        return [
          .send(
            HTTPScriptedServer.answer(
              "206 Partial Content", common + ["Content-Range: bytes 0-0/\(size)", "Content-Length: 1"],
              body: [7]))
        ]
      }
      return steps(first, last)
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
    try expectFetch(kind, timeout: timeout, steps: Self.steps(lie))
  }

  func expectFetch(
    _ kind: RemoteFailure.Kind, timeout: Int = 10,
    steps: @escaping @Sendable (UInt64, UInt64) -> [HTTPScriptedServer.Step]
  ) throws {
    let server = try Self.server(steps: steps)
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

  /// The head of a 206 for `first...last` (announcing its whole body).
  static func partialHead(_ first: UInt64, _ last: UInt64) -> [UInt8] {
    HTTPScriptedServer.answer(
      "206 Partial Content",
      [
        "ETag: \"v1\"", "Content-Range: bytes \(first)-\(last)/\(size)",
        "Content-Length: \(last - first + 1)",
      ])
  }

  /// A server that answers and then stalls (after its headers, or half way through the body), or
  /// sends one byte a second (which the stall limit lets pass): each fetch ends within the
  /// whole-request limit (2 s + 100 bytes at 4 KiB/s with a 1 s timeout) as a transient failure.
  @Test(arguments: ["stall after headers", "stall mid-body", "trickle"])
  func slowAnswersAreCutOffByTheWholeRequestLimit(_ behaviour: String) throws {
    let limit = HTTPClient.totalLimit(timeoutSeconds: 1, bodyBytes: 100)
    #expect(limit.seconds == 3 && limit.milliseconds == 3000)
    let start = ContinuousClock.now
    try expectFetch(.transient, timeout: 1) { first, last -> [HTTPScriptedServer.Step] in
      let body = [UInt8](repeating: 0x55, count: Int(last - first + 1))
      switch behaviour {
      case "stall after headers": return [.send(Self.partialHead(first, last)), .hold]
      case "stall mid-body": return [.send(Self.partialHead(first, last) + body.prefix(50)), .hold]
      default: return [.send(Self.partialHead(first, last)), .trickle(body, interval: .seconds(1))]
      }
    }
    #expect(ContinuousClock.now - start < .seconds(limit.seconds + 3))
  }

  @Test func theWholeRequestLimitGrowsWithTheBody() {
    #expect(HTTPClient.totalLimit(timeoutSeconds: 10, bodyBytes: 0).seconds == 20)
    #expect(HTTPClient.totalLimit(timeoutSeconds: 10, bodyBytes: 4096).seconds == 21)
    #expect(HTTPClient.totalLimit(timeoutSeconds: 10, bodyBytes: 4097).seconds == 22)
    #expect(HTTPClient.totalLimit(timeoutSeconds: 10, bodyBytes: 1 << 20).seconds == 276)
    #expect(HTTPClient.totalLimit(timeoutSeconds: 3600, bodyBytes: .max).milliseconds > 0)
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
