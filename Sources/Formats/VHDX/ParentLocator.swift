import VDiskCore

/// The parent locator of a differencing VHDX (vhdx-notes, "Parent locator item"; MS-VHDX
/// 2.6.2.6): UTF-16LE key/value pairs naming the parent and the parent's DataWriteGuid.
public struct ParentLocator: Sendable {
  /// The VHDX locator type.
  static let vhdxType = GUID(0xB04A_EFB7, 0xD19E, 0x4A81, [0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13])

  public var entries: [String: String]
  /// `parent_linkage`: the parent's DataWriteGuid.
  public var linkage: GUID
  /// `parent_linkage2`: an alternative the parent may carry instead.
  public var linkage2: GUID?

  init(_ bytes: [UInt8], path: String) throws {
    let r = ByteReader(bytes, path: path)
    guard bytes.count >= 20 else {
      throw VDiskError.corrupt(path, "parent locator is \(bytes.count) bytes; too short")
    }
    let type = GUID(onDisk: try r.bytes(0, count: 16))
    guard type == Self.vhdxType else {
      throw VDiskError.unsupported(path, "parent locator type {\(type)} is not the VHDX locator")
    }
    let count = Int(try r.u16le(18))
    guard 20 + 12 * count <= bytes.count else {
      throw VDiskError.corrupt(path, "parent locator claims \(count) entries in \(bytes.count) bytes")
    }
    var entries: [String: String] = [:]
    for i in 0..<count {
      let at = 20 + 12 * i
      let key = try Self.string(r, offset: Int(try r.u32le(at)), length: Int(try r.u16le(at + 8)), path: path)
      let value = try Self.string(
        r, offset: Int(try r.u32le(at + 4)), length: Int(try r.u16le(at + 10)), path: path)
      guard entries[key] == nil else {
        throw VDiskError.corrupt(path, "parent locator lists \"\(key)\" twice")
      }
      entries[key] = value
    }
    guard let text = entries["parent_linkage"], let linkage = GUID(text) else {
      throw VDiskError.corrupt(path, "parent locator lacks a valid parent_linkage GUID")
    }
    self.entries = entries
    self.linkage = linkage
    linkage2 = entries["parent_linkage2"].flatMap { GUID($0) }
    guard recordedName != nil else {
      throw VDiskError.corrupt(
        path, "parent locator has none of relative_path, volume_path and absolute_win32_path")
    }
  }

  /// A UTF-16LE string of `length` bytes at `offset` of the locator.
  static func string(_ r: ByteReader, offset: Int, length: Int, path: String) throws -> String {
    guard length % 2 == 0 else {
      throw VDiskError.corrupt(path, "parent locator string has odd length \(length)")
    }
    return String(
      utf16: try r.bytes(offset, count: length, "parent locator string"), order: .littleEndian, upToNUL: false
    )
  }

  /// The path keys in the order they are tried (vhdx-notes: relative, volume, absolute).
  static let pathKeys = ["relative_path", "volume_path", "absolute_win32_path"]

  /// The first path the locator records, as recorded (for messages and `info`).
  public var recordedName: String? { Self.pathKeys.lazy.compactMap { entries[$0] }.first }

  /// Whether a parent whose DataWriteGuid is `guid` is the one this child was made from.
  public func accepts(_ guid: GUID) -> Bool { guid == linkage || guid == linkage2 }

  /// Absolute paths to try for the parent, best first: `relative_path` resolved against the
  /// child's directory; `volume_path` and `absolute_win32_path` with the volume or drive prefix
  /// removed (a Windows volume cannot exist here); then the file name of each beside the child.
  /// Backslashes become `/` throughout.
  public func candidates(relativeTo child: String) -> [String] {
    var result: [String] = []
    func add(_ path: String) {
      let clean = Self.clean(path)
      if !clean.isEmpty, !result.contains(clean) { result.append(clean) }
    }
    var names: [String] = []
    if let relative = entries["relative_path"] {
      let p = Self.slashes(relative)
      names.append(p)
      add(Self.stripWindowsPrefix(p) ?? PlanContext.resolve(p, relativeTo: child))
    }
    if let volume = entries["volume_path"] {
      let p = Self.slashes(volume)
      names.append(p)
      if let stripped = Self.stripWindowsPrefix(p) { add(stripped) }
    }
    if let absolute = entries["absolute_win32_path"] {
      let p = Self.slashes(absolute)
      names.append(p)
      if let stripped = Self.stripWindowsPrefix(p) {
        add(stripped)
      } else {
        add(PlanContext.resolve(p, relativeTo: child))
      }
    }
    for name in names {
      if let base = name.split(separator: "/").last {
        add(PlanContext.resolve(String(base), relativeTo: child))
      }
    }
    return result
  }

  /// `path` without `.` components and repeated slashes (`..` stays: it may cross a symlink).
  static func clean(_ path: String) -> String {
    let parts = path.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
    return (path.hasPrefix("/") ? "/" : "") + parts.joined(separator: "/")
  }

  static func slashes(_ path: String) -> String { String(path.map { $0 == "\\" ? "/" : $0 }) }

  /// `C:/dir/f` → `/dir/f`; `//?/Volume{…}/dir/f` → `/dir/f`; `//?/C:/dir/f` → `/dir/f`;
  /// nil when the path has no Windows drive or volume prefix.
  static func stripWindowsPrefix(_ path: String) -> String? {
    var p = Substring(path)
    var stripped = false
    if p.hasPrefix("//?/") || p.hasPrefix("//./") {
      p = p.dropFirst(4)
      stripped = true
      if p.hasPrefix("Volume{"), let close = p.firstIndex(of: "}") {
        return String(p[p.index(after: close)...]).nonEmptyAbsolute
      }
    }
    let chars = Array(p.prefix(2))
    if chars.count == 2, chars[0].isLetter, chars[0].isASCII, chars[1] == ":" {
      return String(p.dropFirst(2)).nonEmptyAbsolute
    }
    return stripped ? String(p).nonEmptyAbsolute : nil
  }
}

extension String {
  /// The path made absolute (a leading `/` added when missing).
  fileprivate var nonEmptyAbsolute: String { hasPrefix("/") ? self : "/" + self }
}
