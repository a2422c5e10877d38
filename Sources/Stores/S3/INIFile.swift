/// The sections of an AWS shared config or credentials file (`~/.aws/credentials`,
/// `~/.aws/config`): `[name]` headers and `key = value` lines; `#` and `;` start comments.
/// Lines it does not understand (indented sub-settings, junk) are skipped. Keys are lower-cased.
struct INIFile: Sendable, Equatable {
  private(set) var sections: [String: [String: String]] = [:]

  init(_ text: String) {
    var current: String?
    for rawLine in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
    {
      // An indented line continues the previous setting (an S3 sub-section): not needed here.
      if let first = rawLine.first, first == " " || first == "\t" { continue }
      let line = Self.trimmed(rawLine)
      if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
      if line.hasPrefix("[") {
        guard line.hasSuffix("]"), line.count >= 2 else {
          current = nil
          continue
        }
        let name = String(Self.trimmed(line.dropFirst().dropLast()))
        current = name
        if sections[name] == nil { sections[name] = [:] }
        continue
      }
      guard let section = current, let equals = line.firstIndex(of: "=") else { continue }
      let key = Self.trimmed(line[..<equals]).lowercased()
      let value = String(Self.trimmed(line[line.index(after: equals)...]))
      guard !key.isEmpty else { continue }
      sections[section, default: [:]][key] = value
    }
  }

  subscript(section: String, key: String) -> String? { sections[section]?[key] }

  static func trimmed(_ text: Substring) -> Substring {
    var result = text
    while let first = result.first, first.isWhitespace { result = result.dropFirst() }
    while let last = result.last, last.isWhitespace { result = result.dropLast() }
    return result
  }
}
