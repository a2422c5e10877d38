import CCurl
import RemoteStore
import Synchronization

/// One request: a HEAD, or a GET of the whole resource or of one byte range.
public struct HTTPRequest: Sendable {
  public enum Method: Sendable { case head, get }
  public var url: String
  public var method: Method
  /// The bytes asked for (`Range: bytes=FIRST-LAST`); a 2xx answer other than 206 is then cut off.
  public var range: ClosedRange<UInt64>?
  /// Extra header lines (`Name: value`).
  public var headers: [String] = []
  /// `user:password` for the server (CURLOPT_USERPWD); with `awsSigV4`, key id and secret.
  public var credentials: String?
  /// CURLOPT_AWS_SIGV4's provider string (`aws:amz:REGION:s3`): sign the request with SigV4.
  public var awsSigV4: String?
  /// Send the path as given, without squashing `/../` (an S3 key is a name, not a path).
  public var pathAsIs = false

  public init(url: String, method: Method = .get, range: ClosedRange<UInt64>? = nil) {
    self.url = url
    self.method = method
    self.range = range
  }
}

/// The last response to a request (after redirects).
public struct HTTPResponse: Sendable {
  public var status: Int
  public var headers: HTTPHeaders
  /// Body bytes copied into the caller's buffer.
  public var bodyCount: Int
  /// The start of a non-2xx body (an S3 error document), at most 16 KiB.
  public var errorBody: [UInt8]
  /// A 2xx other than 206 answered a range request; its body was refused.
  public var refusedWholeBody: Bool
}

/// Why a request got no HTTP response to judge.
public struct HTTPTransportError: Error, Sendable, CustomStringConvertible {
  public enum Kind: Sendable, Equatable {
    /// Refused, unresolvable, timed out, cut off: may work on a retry.
    case unreachable
    /// The TLS certificate was not trusted, or the handshake failed.
    case tls
    /// The server sent more body than was asked for, or a body where none belongs.
    case overflow
    /// The URL or an option was refused by libcurl.
    case invalid
    /// The server's answers cannot be followed (a redirect loop, a refused login).
    case refused
  }
  public var kind: Kind
  public var message: String
  public var description: String { message }
}

/// A small libcurl client: HEAD and ranged GET into the caller's buffer, with a pool of reusable
/// easy handles (their connections stay open). Every request has a connect timeout and a stall
/// limit of `RemoteOptions.timeoutSeconds`, and a limit on its whole time (`totalLimit`: a server
/// that trickles its answer cannot hold a read forever), follows at most 5 redirects (HTTP(S)
/// only), and verifies TLS unless `verifyTLS` is off. Thread-safe; no retries (the block cache
/// retries; a request past a limit fails as `.unreachable`, which it retries).
public final class HTTPClient: Sendable {
  public let timeoutSeconds: Int
  public let verifyTLS: Bool
  /// How many idle handles are kept (more may exist while more requests run at once).
  public let connections: Int
  private let idle = Mutex<[CurlHandle]>([])

  public init(options: RemoteOptions) {
    timeoutSeconds = max(1, options.timeoutSeconds)
    verifyTLS = options.verifyTLS
    connections = max(1, options.connections)
  }

  /// Runs `request`; a 2xx body goes into `buffer` (never past its end). Throws only when no
  /// response was had; HTTP error statuses are returned for the caller to judge.
  public func perform(_ request: HTTPRequest, into buffer: UnsafeMutableRawBufferPointer? = nil)
    throws(HTTPTransportError) -> HTTPResponse
  {
    guard let handle = idle.withLock({ $0.popLast() }) ?? CurlHandle() else {
      throw HTTPTransportError(kind: .invalid, message: "cannot create a libcurl handle")
    }
    defer {
      idle.withLock { if $0.count < connections { $0.append(handle) } }
    }
    let transfer = HTTPTransfer(destination: buffer, expectsPartial: request.range != nil)
    var headerList: UnsafeMutablePointer<curl_slist>? = nil
    defer { curl_slist_free_all(headerList) }
    for line in request.headers {
      guard let grown = curl_slist_append(headerList, line) else {
        throw HTTPTransportError(kind: .invalid, message: "cannot build the request headers")
      }
      headerList = grown
    }
    let code = withExtendedLifetime(transfer) { () -> CURLcode in
      let context = Unmanaged.passUnretained(transfer).toOpaque()
      guard configure(handle, request, headers: headerList, context: context) else {
        return CURLE_BAD_FUNCTION_ARGUMENT
      }
      return curl_easy_perform(handle.raw)
    }
    if transfer.overflowed {
      throw HTTPTransportError(
        kind: .overflow, message: "the server sent more data (body or headers) than was asked for")
    }
    // A refused body or a capped error document stop the transfer on purpose (a write error).
    let stoppedOnPurpose = code == CURLE_WRITE_ERROR && (transfer.refusedWholeBody || transfer.status >= 300)
    guard code == CURLE_OK || stoppedOnPurpose else {
      throw HTTPTransportError(kind: Self.kind(of: code), message: handle.message(for: code))
    }
    let status = handle.responseCode
    return HTTPResponse(
      status: status != 0 ? status : transfer.status, headers: transfer.headers, bodyCount: transfer.received,
      errorBody: transfer.errorBody, refusedWholeBody: transfer.refusedWholeBody)
  }

  private func configure(
    _ handle: CurlHandle, _ request: HTTPRequest, headers: UnsafeMutablePointer<curl_slist>?,
    context: UnsafeMutableRawPointer
  ) -> Bool {
    handle.reset()
    var ok = handle.set(CURLOPT_URL, request.url)
    ok =
      ok && handle.set(CURLOPT_PROTOCOLS_STR, "http,https")
      && handle.set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https")
    ok = ok && handle.set(CURLOPT_NOSIGNAL, 1) && handle.set(CURLOPT_FOLLOWLOCATION, 1)
    ok = ok && handle.set(CURLOPT_MAXREDIRS, 5)
    ok = ok && handle.set(CURLOPT_CONNECTTIMEOUT, timeoutSeconds)
    // A transfer slower than 1 byte/s for `timeoutSeconds` is a stalled one.
    ok = ok && handle.set(CURLOPT_LOW_SPEED_LIMIT, 1) && handle.set(CURLOPT_LOW_SPEED_TIME, timeoutSeconds)
    let bodyBytes = request.range.map { $0.upperBound - $0.lowerBound + 1 } ?? 0
    let limit = Self.totalLimit(timeoutSeconds: timeoutSeconds, bodyBytes: bodyBytes)
    ok = ok && handle.set(CURLOPT_TIMEOUT_MS, limit.milliseconds)
    ok = ok && handle.set(CURLOPT_SSL_VERIFYPEER, verifyTLS ? 1 : 0)
    ok = ok && handle.set(CURLOPT_SSL_VERIFYHOST, verifyTLS ? 2 : 0)
    if request.method == .head { ok = ok && handle.set(CURLOPT_NOBODY, 1) }
    if let range = request.range {
      ok = ok && handle.set(CURLOPT_RANGE, "\(range.lowerBound)-\(range.upperBound)")
    }
    if let headers { ok = ok && handle.set(CURLOPT_HTTPHEADER, pointer: UnsafeMutableRawPointer(headers)) }
    if let credentials = request.credentials { ok = ok && handle.set(CURLOPT_USERPWD, credentials) }
    if let provider = request.awsSigV4 { ok = ok && handle.set(CURLOPT_AWS_SIGV4, provider) }
    if request.pathAsIs { ok = ok && handle.set(CURLOPT_PATH_AS_IS, 1) }
    ok = ok && handle.set(CURLOPT_HEADERFUNCTION, callback: curlHeaderCallback)
    ok = ok && handle.set(CURLOPT_HEADERDATA, pointer: context)
    ok = ok && handle.set(CURLOPT_WRITEFUNCTION, callback: curlWriteCallback)
    ok = ok && handle.set(CURLOPT_WRITEDATA, pointer: context)
    return ok
  }

  /// The slowest body rate a request is given time for, in bytes per second.
  public static let floorBytesPerSecond: UInt64 = 4096

  /// The longest a request may take from start to end: twice the timeout (to connect, and to
  /// get the answer started), plus its body at `floorBytesPerSecond`. A server that stalls after
  /// its headers or in the middle of the body, or sends one byte a second (which the stall
  /// limit lets pass), is cut off there.
  public static func totalLimit(timeoutSeconds: Int, bodyBytes: UInt64) -> (seconds: Int, milliseconds: Int) {
    let transfer = bodyBytes / floorBytesPerSecond + (bodyBytes % floorBytesPerSecond == 0 ? 0 : 1)
    // transfer < 2^52, the timeout at most a few thousand seconds: the sum cannot overflow.
    let seconds = Int(clamping: UInt64(2 * max(1, min(timeoutSeconds, 1 << 20))) + transfer)
    let (milliseconds, overflow) = seconds.multipliedReportingOverflow(by: 1000)
    return (seconds, overflow ? Int.max : milliseconds)
  }

  private static func kind(of code: CURLcode) -> HTTPTransportError.Kind {
    switch code {
    case CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CONNECT_ERROR, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
      CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR, CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      .tls
    case CURLE_URL_MALFORMAT, CURLE_UNSUPPORTED_PROTOCOL, CURLE_BAD_FUNCTION_ARGUMENT, CURLE_UNKNOWN_OPTION:
      .invalid
    case CURLE_TOO_MANY_REDIRECTS, CURLE_LOGIN_DENIED, CURLE_OUT_OF_MEMORY:
      .refused
    default:
      .unreachable
    }
  }
}
