import CCurl

/// What one request gathers while libcurl runs it: the status and headers of the last response
/// (a redirect's are dropped when the next response starts) and the body, copied into the
/// caller's buffer and never past its end. The callbacks get this object as their context.
final class HTTPTransfer {
  /// Where a 2xx body goes; nil for requests that expect none (HEAD).
  let destination: UnsafeMutableRawBufferPointer?
  /// Whether the request asked for a byte range: any 2xx other than 206 is then cut off at once
  /// (a server ignoring the range would send the whole object).
  let expectsPartial: Bool
  var status = 0
  var headers = HTTPHeaders()
  var received = 0
  /// The server sent more body than was asked for, or a body where none was expected.
  var overflowed = false
  /// A 200 answered a range request and its body was refused.
  var refusedWholeBody = false
  /// Header bytes of every response so far; past `headerLimit` the transfer is stopped (libcurl
  /// bounds one line, not their number).
  var headerBytes = 0
  /// The first bytes of a non-2xx body (an S3 error document), at most `errorBodyLimit`.
  var errorBody: [UInt8] = []

  static let errorBodyLimit = 16 << 10
  static let headerLimit = 256 << 10

  init(destination: UnsafeMutableRawBufferPointer?, expectsPartial: Bool) {
    self.destination = destination
    self.expectsPartial = expectsPartial
  }

  /// One header line (with its CRLF); a status line starts a new response. False: too many.
  func header(_ line: UnsafeRawBufferPointer) -> Bool {
    headerBytes += line.count
    guard headerBytes <= Self.headerLimit else {
      overflowed = true
      return false
    }
    var end = line.count
    while end > 0, line[end - 1] == 0x0A || line[end - 1] == 0x0D { end -= 1 }
    let text = String(decoding: UnsafeRawBufferPointer(rebasing: line[0..<end]), as: UTF8.self)
    if text.hasPrefix("HTTP/") {
      headers = HTTPHeaders()
      status = HTTPHeaders.status(ofStatusLine: text) ?? 0
    } else if !text.isEmpty {
      headers.add(line: text)
    }
    return true
  }

  /// Body bytes: returns how many were taken; fewer than offered makes libcurl stop the transfer.
  func body(_ data: UnsafeRawBufferPointer) -> Int {
    if (200..<300).contains(status) {
      if expectsPartial && status != 206 {
        refusedWholeBody = true
        return 0
      }
      guard let destination, data.count <= destination.count - received else {
        overflowed = true
        return 0
      }
      if let base = data.baseAddress, let target = destination.baseAddress, !data.isEmpty {
        (target + received).copyMemory(from: base, byteCount: data.count)
      }
      received += data.count
      return data.count
    }
    let room = Self.errorBodyLimit - errorBody.count
    guard room > 0 else { return 0 }
    errorBody += data.prefix(room)
    return data.count <= room ? data.count : 0
  }
}

/// CURLOPT_HEADERFUNCTION: `context` is the request's `HTTPTransfer`.
let curlHeaderCallback: ccurl_data_callback = { data, size, count, context in
  guard let context, let data else { return 0 }
  let (length, overflow) = size.multipliedReportingOverflow(by: count)
  guard !overflow else { return 0 }
  let transfer = Unmanaged<HTTPTransfer>.fromOpaque(context).takeUnretainedValue()
  return transfer.header(UnsafeRawBufferPointer(start: data, count: length)) ? length : 0
}

/// CURLOPT_WRITEFUNCTION: `context` is the request's `HTTPTransfer`.
let curlWriteCallback: ccurl_data_callback = { data, size, count, context in
  guard let context else { return 0 }
  let (length, overflow) = size.multipliedReportingOverflow(by: count)
  guard !overflow else { return 0 }
  guard length > 0, let data else { return 0 }
  let transfer = Unmanaged<HTTPTransfer>.fromOpaque(context).takeUnretainedValue()
  return transfer.body(UnsafeRawBufferPointer(start: data, count: length))
}
