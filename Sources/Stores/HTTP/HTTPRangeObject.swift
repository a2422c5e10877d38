import RemoteStore
import VDiskCore

/// How the requests for one object are made: its URL and what the store adds to each (S3's
/// signature and headers).
public struct HTTPEndpoint: Sendable {
  public var url: String
  public var headers: [String] = []
  public var credentials: String?
  public var awsSigV4: String?
  public var pathAsIs = false

  public init(url: String) { self.url = url }

  public func request(_ method: HTTPRequest.Method, range: ClosedRange<UInt64>? = nil) -> HTTPRequest {
    var request = HTTPRequest(url: url, method: method, range: range)
    request.headers = headers
    request.credentials = credentials
    request.awsSigV4 = awsSigV4
    request.pathAsIs = pathAsIs
    return request
  }
}

/// The version of an object as a response describes it: the ETag when there is one, else the
/// Last-Modified date with the size, else the size alone (then only a size change is noticed).
public struct HTTPVersionTag: Sendable, Equatable {
  public var etag: String?
  public var lastModified: String?

  public init(_ headers: HTTPHeaders) {
    etag = headers["etag"].flatMap { $0.isEmpty ? nil : $0 }
    lastModified = etag == nil ? headers["last-modified"].flatMap { $0.isEmpty ? nil : $0 } : nil
  }

  public func version(size: UInt64) -> RemoteVersion {
    if let etag { return RemoteVersion(size: size, tag: etag) }
    if let lastModified {
      return RemoteVersion(size: size, tag: "last-modified \(lastModified) size \(size)")
    }
    return RemoteVersion(size: size, tag: "size \(size)")
  }

  /// Whether `headers` may describe the same version: a field that is present must match.
  public func matches(_ headers: HTTPHeaders) -> Bool {
    if let etag, let other = headers["etag"], other != etag { return false }
    if let lastModified, let other = headers["last-modified"], other != lastModified { return false }
    return true
  }
}

/// An object read with ranged GETs (an HTTP(S) resource, an S3 object). Every fetch checks that
/// the answer is the version opened: a 206 whose Content-Range is exactly the bytes asked for in
/// an object of the opened size, with the same ETag (or Last-Modified); else `.changed`.
public final class HTTPRangeObject: RemoteObject {
  public let location: String
  public let version: RemoteVersion
  public let parallelism: Int
  let endpoint: HTTPEndpoint
  let client: HTTPClient
  let tag: HTTPVersionTag

  public init(location: String, endpoint: HTTPEndpoint, client: HTTPClient, size: UInt64, tag: HTTPVersionTag)
  {
    self.location = location
    self.endpoint = endpoint
    self.client = client
    self.tag = tag
    self.version = tag.version(size: size)
    self.parallelism = client.connections
  }

  public func fetch(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
    guard offset < version.size, !buffer.isEmpty else { return 0 }
    let length = Int(min(UInt64(buffer.count), version.size - offset))
    let last = offset + UInt64(length) - 1
    let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length])
    let response: HTTPResponse
    do {
      response = try client.perform(endpoint.request(.get, range: offset...last), into: target)
    } catch {
      throw RemoteFailure(
        error.kind == .unreachable ? .transient : .final(.io), location: location, error.message)
    }
    let status = response.status
    guard status == 206 else {
      if response.refusedWholeBody {
        throw RemoteFailure(
          .final(.io), location: location, "the server answered a range request with the whole object")
      }
      throw RemoteFailure(Self.failureKind(status: status), location: location, "HTTP status \(status)")
    }
    guard let range = response.headers.contentRange, range.first == offset, range.last == last else {
      throw RemoteFailure(
        .final(.io), location: location,
        "bad Content-Range '\(response.headers["content-range"] ?? "")' for bytes \(offset)-\(last)")
    }
    guard range.total == version.size, tag.matches(response.headers) else {
      throw RemoteFailure(.changed, location: location, "changed since it was opened (size or ETag differs)")
    }
    guard response.bodyCount == length else {
      throw RemoteFailure(
        .transient, location: location, "short read: \(response.bodyCount) of \(length) bytes")
    }
    return length
  }

  /// What an HTTP error status during a fetch means: a missing object or a failed precondition
  /// is a changed one; 408, 429 and 5xx may pass; refused access is final.
  static func failureKind(status: Int) -> RemoteFailure.Kind {
    switch status {
    case 404, 410, 412, 416: .changed
    case 401, 403: .final(.notPermitted)
    case 408, 429, 500...599: .transient
    default: .final(.io)
    }
  }
}
