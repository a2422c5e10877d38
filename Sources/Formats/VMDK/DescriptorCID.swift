import VDiskCore

/// Where a writable disk's descriptor lives, and how its CID is changed: "A random 32-bit value
/// updated the first time the content of the virtual disk is modified after the virtual disk is
/// opened" (vmdk spec, "Header" of the descriptor file). A child whose parentCID no longer
/// matches is then known to be stale. VMware and QEMU both write a new CID before the first
/// write of a session.
struct DescriptorCID: Sendable {
  /// The file holding the descriptor: a text descriptor file, or a sparse extent embedding it.
  let file: ImageFile
  /// Byte offset of the descriptor in `file` (0 for a descriptor file).
  let offset: UInt64
  /// For an embedded descriptor, the bytes reserved for it (never overflowed); nil for a file.
  let reserved: Int?
  /// The descriptor's bytes as read at open (an embedded one up to its first NUL).
  let text: [UInt8]

  /// The descriptor of `file` for CID updates; nil when it has no CID line (nothing to keep in
  /// step). Throws `.readOnly` when a new CID would not fit the embedded descriptor's sectors.
  static func locate(file: ImageFile, offset: UInt64, reserved: Int?, bytes: [UInt8]) throws -> DescriptorCID?
  {
    let text = Array(bytes.prefix { $0 != 0 })
    guard let replaced = replacingCID(in: text, with: 0) else { return nil }
    if let reserved, replaced.count > reserved {
      throw VDiskError(
        .readOnly, path: file.path,
        "refusing to write: the embedded descriptor has no room for a new CID (\(reserved) bytes reserved)")
    }
    return DescriptorCID(file: file, offset: offset, reserved: reserved, text: text)
  }

  /// `text` with the value of its `CID=` line replaced by `cid` as 8 hex digits (the form VMware
  /// and QEMU write); nil when no line sets the CID. Everything else stays byte for byte.
  static func replacingCID(in text: [UInt8], with cid: UInt32) -> [UInt8]? {
    var lineStart = 0
    while lineStart < text.count {
      var lineEnd = lineStart
      while lineEnd < text.count, text[lineEnd] != 0x0a { lineEnd += 1 }
      let line = text[lineStart..<lineEnd]
      if let equals = line.firstIndex(of: UInt8(ascii: "=")),
        String(decoding: line[..<equals], as: UTF8.self).lowercased().trimmingSpaces == "cid"
      {
        var valueStart = equals + 1
        while valueStart < lineEnd,
          text[valueStart] == 0x20 || text[valueStart] == 0x09 || text[valueStart] == 0x22
        {
          valueStart += 1
        }
        var valueEnd = valueStart
        while valueEnd < lineEnd, isHexDigit(text[valueEnd]) { valueEnd += 1 }
        let digits = String(cid, radix: 16)
        let value = Array((String(repeating: "0", count: 8 - digits.count) + digits).utf8)
        return Array(text[..<valueStart]) + value + Array(text[valueEnd...])
      }
      lineStart = lineEnd + 1
    }
    return nil
  }

  private static func isHexDigit(_ byte: UInt8) -> Bool {
    (0x30...0x39).contains(byte) || (0x41...0x46).contains(byte) || (0x61...0x66).contains(byte)
  }

  /// A new CID: random, never the "no parent" value 0xffffffff nor 0xfffffffe (vmdk spec:
  /// "represents that the long content identifier should be used"), and not `old`.
  static func randomCID(other old: UInt32?) -> UInt32 {
    while true {
      let cid = UInt32.random(in: 0...0xffff_fffd)
      if cid != old { return cid }
    }
  }

  /// Writes the descriptor with `cid` and syncs it.
  func write(_ cid: UInt32) throws {
    guard var bytes = Self.replacingCID(in: text, with: cid) else { return }
    if let reserved {
      guard bytes.count <= reserved else {
        throw VDiskError(.noSpace, path: file.path, "the embedded descriptor has no room for a new CID")
      }
      // Clear what the old text used past the new one (the rest is NULs already).
      if bytes.count < text.count { bytes += [UInt8](repeating: 0, count: text.count - bytes.count) }
      try bytes.withUnsafeBytes { try file.write($0, at: offset) }
    } else {
      try bytes.withUnsafeBytes { try file.write($0, at: offset) }
      if UInt64(bytes.count) < file.size { try file.setSize(UInt64(bytes.count)) }
    }
    try file.dataSync()
  }
}

extension String {
  fileprivate var trimmingSpaces: String {
    Substring(self).trimmingWhitespace.description
  }
}
