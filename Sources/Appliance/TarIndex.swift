import VDiskCore

/// One entry of a tar archive: its name, its type and where its bytes lie in the archive.
public struct TarMember: Sendable, Equatable {
  /// What the entry is (ustar `typeflag`, GNU and pax extensions).
  public enum Kind: Sendable, Equatable {
    /// '0', NUL (old tars) or '7' (contiguous): bytes in the archive.
    case regular
    /// '1': the same file as the member named `target` (ustar `linkname`, pax `linkpath`, GNU
    /// `K`); no bytes of its own.
    case hardLink(target: String)
    /// '2'.
    case symbolicLink(target: String)
    /// GNU sparse file: type 'S' (old GNU format) or pax `GNU.sparse.*` records (formats 0.0,
    /// 0.1, 1.0). Its bytes in the archive are the data without the holes.
    case gnuSparse
    /// Anything else kept in the index: directories, devices, FIFOs, GNU multi-volume parts and
    /// volume labels, unknown types; `type` is the typeflag byte.
    case other(type: UInt8)
  }

  public var name: String
  public var offset: UInt64
  public var size: UInt64
  public var kind: Kind

  public init(name: String, offset: UInt64, size: UInt64, kind: Kind = .regular) {
    self.name = name
    self.offset = offset
    self.size = size
    self.kind = kind
  }

  /// The entry's type in words and its typeflag, for messages: "GNU sparse file (type 'S')".
  public var typeDescription: String {
    switch kind {
    case .regular: return "regular file"
    case .hardLink(let target): return "hard link (type '1') to \"\(target)\""
    case .symbolicLink(let target): return "symbolic link (type '2') to \"\(target)\""
    case .gnuSparse: return "GNU sparse file (type 'S' or pax GNU.sparse records)"
    case .other(let type):
      let flag =
        (0x21...0x7E).contains(type)
        ? "type '\(Character(Unicode.Scalar(type)))'" : "type byte \(hex(UInt64(type)))"
      let names: [UInt8: String] = [
        UInt8(ascii: "3"): "character device", UInt8(ascii: "4"): "block device",
        UInt8(ascii: "5"): "directory", UInt8(ascii: "6"): "FIFO",
        UInt8(ascii: "D"): "GNU dump directory", UInt8(ascii: "M"): "GNU multi-volume continuation",
        UInt8(ascii: "N"): "GNU old long-name entry", UInt8(ascii: "V"): "GNU volume label",
      ]
      return "\(names[type] ?? "tar entry") (\(flag))"
    }
  }
}

/// The index of a tar archive (an OVA): its entries, read from the headers without touching the
/// data. POSIX ustar headers (with the `prefix` field), pax extended headers (`path`, `linkpath`
/// and `size` records; global headers skipped) and GNU long names and link names (`L`, `K`).
/// Every header's checksum is verified; sizes are octal or GNU base-256; every member must lie
/// inside the file. GNU sparse members ('S') are stepped over with their extension headers.
/// Metadata entries (pax, GNU long names) are not members; every other entry is, with its type
/// (what may be read is the caller's choice).
public enum TarIndex {
  static let block: UInt64 = 512
  /// The most members an appliance may hold (real ones hold a handful).
  public static let maxMembers = 10_000
  /// The largest pax header or GNU long name read into memory.
  static let maxMetadata: UInt64 = 1 << 20

  /// Whether `header` (the first 512 bytes of a file) is a tar header with a valid checksum.
  public static func looksLikeTar(_ header: [UInt8]) -> Bool {
    header.count >= Int(block) && TarHeader(header, at: 0, path: "").isValidChecksum
  }

  public static func read(_ file: ImageFile) throws -> [TarMember] {
    var members: [TarMember] = []
    var position: UInt64 = 0
    var longName: String?
    var longLink: String?
    var pax: [String: String] = [:]
    var headers = 0
    func countHeader() throws {
      headers += 1
      guard headers <= maxMembers * 3 else {
        throw VDiskError.unsupported(file.path, "the archive holds more than \(maxMembers) members")
      }
    }
    while position + block <= file.size {
      let bytes = try file.readBytes(at: position, count: Int(block), what: "tar header")
      if bytes.allSatisfy({ $0 == 0 }) { break }  // end of archive
      try countHeader()
      let header = TarHeader(bytes, at: position, path: file.path)
      guard header.isValidChecksum else {
        throw VDiskError.corrupt(
          file.path, at: position, "tar header at offset \(position) has a bad checksum")
      }
      var size = try header.size()
      if let stated = pax["size"] {
        guard let value = UInt64(stated) else {
          throw VDiskError.corrupt(file.path, at: position, "pax header states a size of \"\(stated)\"")
        }
        size = value
      }
      var data = position + block
      // Old GNU sparse: "isextended" (byte 482) says a 512-byte block of more sparse entries
      // follows the header, each ending with its own flag (byte 504); the data comes after them.
      if header.type == UInt8(ascii: "S"), bytes[482] != 0 {
        var extended = true
        while extended {
          guard data + block <= file.size else {
            throw VDiskError.corrupt(
              file.path, at: position,
              "GNU sparse header at offset \(position) has extension headers past the end of the archive")
          }
          try countHeader()
          extended = try file.readBytes(at: data, count: Int(block), what: "GNU sparse extension")[504] != 0
          data += block
        }
      }
      guard size <= file.size - data else {
        throw VDiskError.corrupt(
          file.path, at: position,
          "tar member \"\(header.name)\" of \(size) bytes at offset \(data) runs past the end of the archive (\(file.size) bytes)"
        )
      }
      let next = data + (size + block - 1) / block * block
      switch header.type {
      case UInt8(ascii: "x"):
        pax = try PaxRecords.parse(
          try metadata(file, at: data, size: size, what: "pax header"), path: file.path)
      case UInt8(ascii: "g"):
        break  // global pax header: nothing an appliance needs
      case UInt8(ascii: "L"):
        longName = TarHeader.string(try metadata(file, at: data, size: size, what: "GNU long name")[...])
      case UInt8(ascii: "K"):
        longLink = TarHeader.string(try metadata(file, at: data, size: size, what: "GNU long link name")[...])
      default:
        guard members.count < maxMembers else {
          throw VDiskError.unsupported(file.path, "the archive holds more than \(maxMembers) members")
        }
        let sparsePax = pax.keys.contains { $0.hasPrefix("GNU.sparse.") }
        let name = (sparsePax ? pax["GNU.sparse.name"] : nil) ?? pax["path"] ?? longName ?? header.name
        let link = pax["linkpath"] ?? longLink ?? header.linkName
        let kind: TarMember.Kind
        switch header.type {
        case _ where sparsePax, UInt8(ascii: "S"): kind = .gnuSparse
        case 0, UInt8(ascii: "0"), UInt8(ascii: "7"): kind = .regular
        case UInt8(ascii: "1"): kind = .hardLink(target: link)
        case UInt8(ascii: "2"): kind = .symbolicLink(target: link)
        case let type: kind = .other(type: type)
        }
        members.append(TarMember(name: name, offset: data, size: size, kind: kind))
        pax = [:]
        longName = nil
        longLink = nil
      }
      position = next
    }
    return members
  }

  private static func metadata(_ file: ImageFile, at offset: UInt64, size: UInt64, what: String) throws
    -> [UInt8]
  {
    guard size <= maxMetadata else {
      throw VDiskError.unsupported(file.path, "\(what) at offset \(offset) is \(size) bytes, more than 1 MiB")
    }
    return try file.readBytes(at: offset, count: Int(size), what: what)
  }
}

/// One 512-byte tar header (POSIX 1003.1-1988 ustar, with GNU and pax extensions).
struct TarHeader {
  let bytes: [UInt8]
  let offset: UInt64
  let path: String

  init(_ bytes: [UInt8], at offset: UInt64, path: String) {
    self.bytes = bytes
    self.offset = offset
    self.path = path
  }

  /// ustar: "chksum … the sum of all bytes in the header, with the chksum field taken as
  /// spaces", in octal. Some old tars summed signed bytes: either sum is accepted.
  var isValidChecksum: Bool {
    guard bytes.count >= 512, let stated = Self.octal(bytes[148..<156]) else { return false }
    var unsigned: Int64 = 0
    var signed: Int64 = 0
    for (i, b) in bytes.prefix(512).enumerated() {
      let v: UInt8 = (148..<156).contains(i) ? 0x20 : b
      unsigned += Int64(v)
      signed += Int64(Int8(bitPattern: v))
    }
    return UInt64(bitPattern: unsigned) == stated || UInt64(bitPattern: signed) == stated
  }

  var type: UInt8 { bytes[156] }

  /// `linkname`: the target of a hard or symbolic link.
  var linkName: String { Self.string(bytes[157..<257]) }

  /// `name`, behind ustar's `prefix` and a slash when the header is POSIX ustar and has one.
  var name: String {
    let name = Self.string(bytes[0..<100])
    // POSIX "ustar\0" only: GNU's "ustar  " header keeps other fields where `prefix` would be.
    guard bytes[257..<263].elementsEqual("ustar\0".utf8) else { return name }
    let prefix = Self.string(bytes[345..<500])
    return prefix.isEmpty ? name : prefix + "/" + name
  }

  /// The `size` field: octal digits, or GNU base-256 (high bit of the first byte set).
  func size() throws -> UInt64 {
    let field = bytes[124..<136]
    if let first = field.first, first & 0x80 != 0 {
      guard first == 0x80, field.dropFirst().prefix(3).allSatisfy({ $0 == 0 }) else {
        throw VDiskError.corrupt(
          path, at: offset, "tar header at offset \(offset) has a negative or huge size")
      }
      return field.dropFirst(4).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
    guard let value = Self.octal(field) else {
      throw VDiskError.corrupt(path, at: offset, "tar header at offset \(offset) has a malformed size field")
    }
    return value
  }

  static func string(_ field: ArraySlice<UInt8>) -> String {
    String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
  }

  /// Octal digits, optionally surrounded by spaces and ended by NUL; nil when malformed.
  static func octal(_ field: ArraySlice<UInt8>) -> UInt64? {
    var value: UInt64 = 0
    var digits = 0
    var ended = false
    for b in field {
      if b == 0 || b == 0x20 {
        if digits > 0 { ended = true }
        continue
      }
      guard !ended, b >= 0x30, b <= 0x37, value >> 60 == 0 else { return nil }
      value = value << 3 | UInt64(b - 0x30)
      digits += 1
    }
    return digits > 0 ? value : nil
  }
}

/// pax extended header records: "%d %s=%s\n", the length counting the whole record.
enum PaxRecords {
  static func parse(_ bytes: [UInt8], path: String) throws -> [String: String] {
    var records: [String: String] = [:]
    var i = 0
    while i < bytes.count {
      if bytes[i] == 0 { break }
      var length = 0
      var j = i
      while j < bytes.count, bytes[j] >= 0x30, bytes[j] <= 0x39, length < 1 << 21 {
        length = length * 10 + Int(bytes[j] - 0x30)
        j += 1
      }
      guard j < bytes.count, bytes[j] == 0x20, length > j - i + 1, length <= bytes.count - i,
        bytes[i + length - 1] == 0x0A
      else {
        throw VDiskError.corrupt(path, "malformed pax record at byte \(i) of a pax header")
      }
      let record = bytes[(j + 1)..<(i + length - 1)]
      guard let equals = record.firstIndex(of: UInt8(ascii: "=")) else {
        throw VDiskError.corrupt(path, "pax record without '=' at byte \(i) of a pax header")
      }
      let key = String(decoding: record[record.startIndex..<equals], as: UTF8.self)
      records[key] = String(decoding: record[(equals + 1)...], as: UTF8.self)
      i += length
    }
    return records
  }
}
