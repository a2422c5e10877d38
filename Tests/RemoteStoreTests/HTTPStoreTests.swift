import Foundation
import HTTPStore
import RemoteStore
import Synchronization
import TestSupport
import Testing
import VDiskCore

/// The HTTP(S) store against a real nginx on 127.0.0.1: sizes, ranged reads byte-compared with
/// the served file, and every refusal the store promises.
@Suite struct HTTPStoreTests {
  static func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
  }

  static func fetch(_ object: any RemoteObject, _ offset: UInt64, _ count: Int) throws -> [UInt8] {
    var buffer = [UInt8](repeating: 0xEE, count: count)
    let n = try buffer.withUnsafeMutableBytes { try object.fetch(into: $0, at: offset) }
    return Array(buffer[0..<n])
  }

  static func options(timeout: Int = 10, verifyTLS: Bool = true) -> RemoteOptions {
    var options = RemoteOptions()
    options.timeoutSeconds = timeout
    options.verifyTLS = verifyTLS
    return options
  }

  @Test func opensAndReadsRangesOfTheServedFile() throws {
    let server = try NginxServer()
    defer { server.stop() }
    let content = Self.randomBytes(3 << 20 + 12345)
    try server.put("disk.img", content)
    let object = try HTTPStore.open(server.url("disk.img"), writable: false, options: Self.options())
    #expect(object.version.size == UInt64(content.count))
    #expect(object.version.tag.hasPrefix("\""))  // nginx's ETag
    #expect(!object.isWritable)
    let size = content.count
    for (offset, count) in [
      (0, 1), (0, 4096), (512, 65536), (1 << 20 + 7, 1 << 20), (size - 100, 100), (0, size),
    ] {
      #expect(try Self.fetch(object, UInt64(offset), count) == Array(content[offset..<offset + count]))
    }
    // Past the end: only what exists, then nothing.
    #expect(try Self.fetch(object, UInt64(size - 10), 4096) == Array(content[(size - 10)...]))
    #expect(try Self.fetch(object, UInt64(size), 4096).isEmpty)
    #expect(try Self.fetch(object, UInt64(size) + 1 << 30, 4096).isEmpty)
  }

  @Test func concurrentFetchesShareThePool() throws {
    let server = try NginxServer()
    defer { server.stop() }
    let content = Self.randomBytes(1 << 20)
    try server.put("d", content)
    let object = try HTTPStore.open(server.url("d"), writable: false, options: Self.options())
    let failures = Atomic<Int>(0)
    DispatchQueue.concurrentPerform(iterations: 64) { i in
      let offset = (i * 15_013) % (content.count - 8192)
      let got = try? Self.fetch(object, UInt64(offset), 8192)
      if got != Array(content[offset..<offset + 8192]) { failures.add(1, ordering: .relaxed) }
    }
    #expect(failures.load(ordering: .relaxed) == 0)
  }

  @Test func anEmptyFileOpensWithSizeZero() throws {
    let server = try NginxServer()
    defer { server.stop() }
    try server.put("empty", [])
    let object = try HTTPStore.open(server.url("empty"), writable: false, options: Self.options())
    #expect(object.version.size == 0)
    #expect(try Self.fetch(object, 0, 10).isEmpty)
  }

  @Test func aMissingFileIsNotFound() throws {
    let server = try NginxServer()
    defer { server.stop() }
    let error = #expect(throws: VDiskError.self) {
      try HTTPStore.open(server.url("nothing.qcow2"), writable: false, options: Self.options())
    }
    #expect(error?.kind == .notFound)
    #expect(error?.path == server.url("nothing.qcow2"))
  }

  @Test func aServerIgnoringRangesIsRefused() throws {
    let server = try NginxServer(ranges: false)
    defer { server.stop() }
    try server.put("d", Self.randomBytes(100_000))
    let error = #expect(throws: VDiskError.self) {
      try HTTPStore.open(server.url("d"), writable: false, options: Self.options())
    }
    #expect(error?.kind == .unsupported)
    #expect(error?.detail.contains("does not serve byte ranges") == true)
  }

  @Test func aFileReplacedWhileOpenFailsAsChanged() throws {
    let server = try NginxServer()
    defer { server.stop() }
    let first = Self.randomBytes(200_000)
    try server.put("d", first)
    let object = try HTTPStore.open(server.url("d"), writable: false, options: Self.options())
    #expect(try Self.fetch(object, 0, 4096) == Array(first[0..<4096]))
    // Same size, other bytes and another modification time (nginx's ETag is mtime-size).
    try server.put("d", Self.randomBytes(200_000))
    try FileManager.default.setAttributes(
      [.modificationDate: Date().addingTimeInterval(100)], ofItemAtPath: server.root + "/d")
    let sameSize = #expect(throws: RemoteFailure.self) { try Self.fetch(object, 0, 4096) }
    #expect(sameSize?.kind == .changed)
    // Shorter: the Content-Range total differs (and a range past the new end is refused).
    try server.put("d", Array(first[0..<100_000]))
    for offset: UInt64 in [0, 150_000] {
      let shorter = #expect(throws: RemoteFailure.self) { try Self.fetch(object, offset, 4096) }
      #expect(shorter?.kind == .changed)
    }
    // Gone.
    try FileManager.default.removeItem(atPath: server.root + "/d")
    let gone = #expect(throws: RemoteFailure.self) { try Self.fetch(object, 0, 4096) }
    #expect(gone?.kind == .changed)
  }

  @Test func aStoppedServerIsATransientFailureAtFetchAndUnreachableAtOpen() throws {
    let server = try NginxServer()
    defer { server.stop() }
    try server.put("d", Self.randomBytes(100_000))
    let object = try HTTPStore.open(server.url("d"), writable: false, options: Self.options(timeout: 2))
    server.stop()
    let start = ContinuousClock.now
    let failure = #expect(throws: RemoteFailure.self) { try Self.fetch(object, 0, 4096) }
    #expect(failure?.kind == .transient)
    let error = #expect(throws: VDiskError.self) {
      try HTTPStore.open(server.url("d"), writable: false, options: Self.options(timeout: 2))
    }
    #expect(error?.kind == .io)
    #expect(error?.detail.contains("cannot reach 127.0.0.1:\(server.port)") == true)
    #expect(ContinuousClock.now - start < .seconds(5))
  }

  @Test func selfSignedTLSIsRefusedByDefaultAndReadWithVerificationOff() throws {
    let server = try NginxServer(tls: true)
    defer { server.stop() }
    let content = Self.randomBytes(300_000)
    try server.put("d", content)
    #expect(server.url("d").hasPrefix("https://"))
    let error = #expect(throws: VDiskError.self) {
      try HTTPStore.open(server.url("d"), writable: false, options: Self.options())
    }
    #expect(error?.kind == .io)
    #expect(error?.detail.contains("sslverify=off") == true)
    let object = try HTTPStore.open(server.url("d"), writable: false, options: Self.options(verifyTLS: false))
    #expect(try Self.fetch(object, 1000, 100_000) == Array(content[1000..<101_000]))
  }

  @Test func malformedURLsAreInvalidArguments() {
    for url in ["http://", "https:///x", "http://host/a b", "http://host/\u{7}"] {
      let error = #expect(throws: VDiskError.self) {
        try HTTPStore.open(url, writable: false, options: Self.options())
      }
      #expect(error?.kind == .invalidArgument)
    }
  }
}
