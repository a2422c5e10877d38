import RemoteStore
import VDiskCore

/// Opening an object read with ranged GETs: its size and version, and proof that the server
/// serves byte ranges (a `Range: bytes=0-0` GET answered 206 with a Content-Range giving the
/// total size). Shared by the HTTP(S) and S3 stores; each judges error statuses its own way.
public enum HTTPOpening {
  /// Opens `location` at `endpoint`. With `head`, a HEAD gives size and version first (a server
  /// that refuses HEAD with 403, 405 or 501 is asked by range GET alone, as a presigned URL
  /// wants). `judge` turns an error answer into the error to throw.
  public static func open(
    _ location: String, endpoint: HTTPEndpoint, client: HTTPClient, head: Bool,
    judge: (HTTPResponse) -> VDiskError
  ) throws -> HTTPRangeObject {
    var known: (size: UInt64, tag: HTTPVersionTag)?
    if head {
      let response = try perform(location, endpoint.request(.head), client)
      if (200..<300).contains(response.status) {
        guard let size = response.headers.contentLength else {
          throw VDiskError(
            .unsupported, path: location, "the server does not give its size (no Content-Length)")
        }
        known = (size, HTTPVersionTag(response.headers))
      } else if ![403, 405, 501].contains(response.status) {
        throw judge(response)
      }
    }
    if let known, known.size == 0 {
      return HTTPRangeObject(location: location, endpoint: endpoint, client: client, size: 0, tag: known.tag)
    }
    var byte: UInt8 = 0
    let probe = try withUnsafeMutableBytes(of: &byte) {
      try perform(location, endpoint.request(.get, range: 0...0), client, into: $0)
    }
    if probe.refusedWholeBody || (200..<300).contains(probe.status) && probe.status != 206 {
      throw VDiskError(
        .unsupported, path: location,
        "the server does not serve byte ranges (it answered a range request with the whole file)")
    }
    if probe.status == 416 && known == nil {
      // An empty object has no byte 0; its HEAD says so.
      let response = try perform(location, endpoint.request(.head), client)
      if (200..<300).contains(response.status), response.headers.contentLength == 0 {
        return HTTPRangeObject(
          location: location, endpoint: endpoint, client: client, size: 0,
          tag: HTTPVersionTag(response.headers))
      }
    }
    guard probe.status == 206 else { throw judge(probe) }
    guard let range = probe.headers.contentRange, range.first == 0, range.last == 0, let total = range.total,
      probe.bodyCount == 1
    else {
      throw VDiskError(
        .unsupported, path: location,
        "the server does not serve byte ranges (bad Content-Range '\(probe.headers["content-range"] ?? "")')")
    }
    if let known {
      guard total == known.size, known.tag.matches(probe.headers) else {
        throw VDiskError(.io, path: location, "changed while it was being opened")
      }
      return HTTPRangeObject(
        location: location, endpoint: endpoint, client: client, size: total, tag: known.tag)
    }
    return HTTPRangeObject(
      location: location, endpoint: endpoint, client: client, size: total, tag: HTTPVersionTag(probe.headers))
  }

  /// The plain HTTP judgement of an error answer at open.
  public static func judge(_ location: String, _ response: HTTPResponse) -> VDiskError {
    switch response.status {
    case 404, 410: VDiskError(.notFound, path: location, "not found on the server (HTTP \(response.status))")
    case 401, 403: VDiskError(.notPermitted, path: location, "access refused (HTTP \(response.status))")
    case 500...599:
      VDiskError(
        .io, path: location, "cannot reach \(host(of: location)): server error (HTTP \(response.status))")
    default: VDiskError(.io, path: location, "unexpected answer (HTTP \(response.status))")
    }
  }

  /// Runs a request of `open`, turning a transport failure into the `VDiskError` to show.
  static func perform(
    _ location: String, _ request: HTTPRequest, _ client: HTTPClient,
    into buffer: UnsafeMutableRawBufferPointer? = nil
  ) throws -> HTTPResponse {
    do {
      return try client.perform(request, into: buffer)
    } catch {
      let host = host(of: request.url)
      switch error.kind {
      case .unreachable: throw VDiskError(.io, path: location, "cannot reach \(host): \(error.message)")
      case .tls:
        throw VDiskError(
          .io, path: location,
          "TLS with \(host) failed: \(error.message) (-o sslverify=off skips certificate verification)")
      case .overflow, .refused: throw VDiskError(.io, path: location, "\(host): \(error.message)")
      case .invalid: throw VDiskError(.invalidArgument, path: location, error.message)
      }
    }
  }

  /// `host:port` of `scheme://host:port/path` (the whole text when it has no scheme).
  public static func host(of url: String) -> String {
    let bytes = Array(url.utf8)
    var start = 0
    while start + 2 < bytes.count, bytes[start] != UInt8(ascii: ":") { start += 1 }
    guard start + 2 < bytes.count, bytes[start + 1] == UInt8(ascii: "/"),
      bytes[start + 2] == UInt8(ascii: "/")
    else { return url }
    start += 3
    var end = start
    while end < bytes.count, ![UInt8(ascii: "/"), UInt8(ascii: "?"), UInt8(ascii: "#")].contains(bytes[end]) {
      end += 1
    }
    let authority = bytes[start..<end]
    let hostStart = authority.lastIndex(of: UInt8(ascii: "@")).map { $0 + 1 } ?? start
    return String(decoding: bytes[hostStart..<end], as: UTF8.self)
  }
}
