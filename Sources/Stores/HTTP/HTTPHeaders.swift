/// The header fields of one HTTP response, by lower-cased name, and strict parsers for the few a
/// ranged read relies on. Everything here comes from the server and is checked: a malformed or
/// repeated-and-conflicting field parses as nil, never as a guess.
public struct HTTPHeaders: Sendable, Equatable {
  private var fields: [String: String] = [:]

  /// A hostile server may send many fields; the rest are dropped.
  static let maxFields = 128

  public init() {}

  /// The value of `name` (any case); repeated fields are joined with ", " (RFC 9110 5.3), which
  /// the single-value parsers below then refuse.
  public subscript(name: String) -> String? { fields[name.lowercased()] }

  /// Adds one `Name: value` line; lines without a colon or with an empty name are ignored.
  mutating func add(line: String) {
    guard let colon = line.firstIndex(of: ":") else { return }
    let name = line[..<colon].lowercased()
    guard !name.isEmpty, !name.contains(where: { $0 == " " || $0 == "\t" }) else { return }
    let value = String(Self.trimmed(line[line.index(after: colon)...]))
    if let old = fields[name] {
      fields[name] = old + ", " + value
    } else if fields.count < Self.maxFields {
      fields[name] = value
    }
  }

  /// `HTTP/1.1 206 Partial Content` (or `HTTP/2 206`): 206.
  static func status(ofStatusLine line: String) -> Int? {
    let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
    guard parts.count >= 2, parts[1].count == 3, let code = decimal(parts[1]) else { return nil }
    return Int(code)
  }

  /// Content-Length, when it is one decimal number.
  public var contentLength: UInt64? { self["content-length"].flatMap { Self.decimal(Substring($0)) } }

  /// Content-Range of a 206 (RFC 9110 14.4, `bytes FIRST-LAST/TOTAL`, TOTAL may be `*`):
  /// nil unless well formed with FIRST <= LAST < TOTAL.
  public var contentRange: (first: UInt64, last: UInt64, total: UInt64?)? {
    guard let value = self["content-range"], value.hasPrefix("bytes ") else { return nil }
    let spec = value.dropFirst("bytes ".count)
    guard let dash = spec.firstIndex(of: "-"), let slash = spec.firstIndex(of: "/"), dash < slash,
      let first = Self.decimal(spec[..<dash]),
      let last = Self.decimal(spec[spec.index(after: dash)..<slash]), first <= last
    else { return nil }
    let totalText = spec[spec.index(after: slash)...]
    if totalText == "*" { return (first, last, nil) }
    guard let total = Self.decimal(totalText), last < total else { return nil }
    return (first, last, total)
  }

  /// A non-negative decimal number of at most 19 digits (fits UInt64), nothing else.
  static func decimal(_ text: Substring) -> UInt64? {
    guard !text.isEmpty, text.count <= 19, text.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
    return UInt64(text)
  }

  static func trimmed(_ text: Substring) -> Substring {
    var result = text
    while let first = result.first, first == " " || first == "\t" { result = result.dropFirst() }
    while let last = result.last, last == " " || last == "\t" { result = result.dropLast() }
    return result
  }
}
