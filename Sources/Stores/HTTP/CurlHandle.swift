import CCurl

/// One libcurl easy handle and the error buffer libcurl writes its messages into. A handle is
/// used by one thread at a time (the `HTTPClient` pool hands it out); reusing it keeps its
/// connections alive between requests.
final class CurlHandle: @unchecked Sendable {
  let raw: UnsafeMutableRawPointer
  /// CURLOPT_ERRORBUFFER: libcurl keeps the pointer, so it lives as long as the handle.
  let errorBuffer: UnsafeMutablePointer<CChar>
  private let errorBufferSize: Int

  /// Nil when libcurl cannot make a handle (out of memory).
  init?() {
    guard curlGlobalInit, let handle = curl_easy_init() else { return nil }
    raw = handle
    errorBufferSize = Int(ccurl_error_size())
    errorBuffer = .allocate(capacity: errorBufferSize)
    errorBuffer.initialize(repeating: 0, count: errorBufferSize)
  }

  deinit {
    curl_easy_cleanup(raw)
    errorBuffer.deallocate()
  }

  /// Forgets the options of the previous request (connections and caches stay), and points
  /// libcurl's error messages at `errorBuffer` again.
  func reset() {
    curl_easy_reset(raw)
    errorBuffer[0] = 0
    _ = ccurl_setopt_pointer(raw, CURLOPT_ERRORBUFFER, errorBuffer)
  }

  func set(_ option: CURLoption, _ value: Int) -> Bool {
    ccurl_setopt_long(raw, option, value) == CURLE_OK
  }

  func set(_ option: CURLoption, _ value: String) -> Bool {
    ccurl_setopt_string(raw, option, value) == CURLE_OK
  }

  func set(_ option: CURLoption, pointer: UnsafeMutableRawPointer?) -> Bool {
    ccurl_setopt_pointer(raw, option, pointer) == CURLE_OK
  }

  func set(_ option: CURLoption, callback: ccurl_data_callback) -> Bool {
    ccurl_setopt_callback(raw, option, callback) == CURLE_OK
  }

  /// The HTTP status of the last response (0 when there was none).
  var responseCode: Int {
    var code = 0
    guard ccurl_getinfo_long(raw, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK else { return 0 }
    return code
  }

  /// libcurl's message for the last failure: the error buffer, else the code's generic text.
  func message(for code: CURLcode) -> String {
    errorBuffer[errorBufferSize - 1] = 0
    let specific = String(cString: errorBuffer)
    return specific.isEmpty ? String(cString: curl_easy_strerror(code)) : specific
  }
}

/// `curl_global_init`, run once before the first handle (a Swift global is initialized once,
/// thread-safely).
private let curlGlobalInit: Bool = ccurl_global_init() == CURLE_OK
