/// The `<Code>` of an S3 error document (`<Error><Code>NoSuchKey</Code>...`), found by a plain
/// scan (no XML parser): the text between the first `<Code>` and the `</Code>` after it, when it
/// is 1 to 64 letters and digits. Nil otherwise.
func s3ErrorCode(_ body: [UInt8]) -> String? {
  let open = Array("<Code>".utf8)
  let close = Array("</Code>".utf8)
  guard let start = firstIndex(of: open, in: body, from: 0).map({ $0 + open.count }),
    let end = firstIndex(of: close, in: body, from: start), end > start, end - start <= 64
  else { return nil }
  let code = body[start..<end]
  guard code.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) }) else {
    return nil
  }
  return String(decoding: code, as: UTF8.self)
}

private func firstIndex(of needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
  guard !needle.isEmpty, haystack.count >= needle.count, start <= haystack.count - needle.count else {
    return nil
  }
  for i in start...(haystack.count - needle.count) where haystack[i] == needle[0] {
    if haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
  }
  return nil
}
