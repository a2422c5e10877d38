import VDiskCore

/// One of the eight parent locator entries of a dynamic disk header (vhd.asciidoc, "Parent
/// locator entry"): where a differencing disk's parent may be found.
public struct VHDParentLocator: Sendable {
  /// vhd.asciidoc, "Locator platform code": UTF-16 relative / absolute Windows paths, and the
  /// deprecated single-byte ones.
  static let w2ru: UInt32 = 0x5732_7275  // "W2ru"
  static let w2ku: UInt32 = 0x5732_6B75  // "W2ku"
  static let wi2r: UInt32 = 0x5769_3272  // "Wi2r"
  static let wi2k: UInt32 = 0x5769_326B  // "Wi2k"
  /// Longest locator we read: a Windows path of 32767 UTF-16 units.
  static let maxDataLength: UInt32 = 65536

  public var platformCode: UInt32
  public var dataLength: UInt32
  public var dataOffset: UInt64

  init(_ r: ByteReader, at offset: Int) throws {
    platformCode = try r.u32be(offset, "parent locator platform code")
    dataLength = try r.u32be(offset + 8, "parent locator data length")
    dataOffset = try r.u64be(offset + 16, "parent locator data offset")
  }

  var isRelative: Bool { platformCode == Self.w2ru || platformCode == Self.wi2r }

  /// The path this locator holds (backslashes made slashes), or nil for platform codes we do not
  /// read (Mac aliases and URLs). Throws `.corrupt` when the data lies outside the file.
  func path(in file: ImageFile) throws -> String? {
    let wide = platformCode == Self.w2ru || platformCode == Self.w2ku
    guard wide || platformCode == Self.wi2r || platformCode == Self.wi2k else { return nil }
    guard dataLength <= Self.maxDataLength, dataOffset <= file.size,
      UInt64(dataLength) <= file.size - dataOffset
    else {
      throw VDiskError.corrupt(
        file.path, at: dataOffset,
        "parent locator data (\(dataLength) bytes at \(hex(dataOffset))) lies beyond end of file or is too long"
      )
    }
    let bytes = try file.readBytes(at: dataOffset, count: Int(dataLength), what: "parent locator")
    let text =
      wide
      ? String(utf16: bytes[...], order: .littleEndian)
      : String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    let path = normalized(text.replacingBackslashes())
    return path.isEmpty ? nil : path
  }
}

extension String {
  func replacingBackslashes() -> String {
    String(map { $0 == "\\" ? "/" : $0 })
  }
}

/// `path` without "." components and empty ones ("./a//b" → "a/b"), keeping a leading "/".
func normalized(_ path: String) -> String {
  let parts = path.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
  return (path.hasPrefix("/") ? "/" : "") + parts.joined(separator: "/")
}

/// Where to look for a differencing disk's parent, in order: relative locators (against the
/// child's directory), absolute locators that are absolute here, then each locator's and the
/// parent name's last component next to the child (disks moved together from Windows).
func parentCandidates(header: VHDDynamicHeader, file: ImageFile) throws -> [String] {
  var paths: [String] = []
  var fallbacks: [String] = []
  let ordered = header.locators.filter(\.isRelative) + header.locators.filter { !$0.isRelative }
  for locator in ordered {
    guard let path = try locator.path(in: file) else { continue }
    if locator.isRelative {
      paths.append(PlanContext.resolve(path, relativeTo: file.path))
    } else if path.hasPrefix("/") {
      paths.append(path)
    }
    fallbacks.append(lastComponent(path))
  }
  let name = header.parentName.replacingBackslashes()
  if !name.isEmpty { fallbacks.append(lastComponent(name)) }
  for base in fallbacks where !base.isEmpty {
    paths.append(PlanContext.resolve(base, relativeTo: file.path))
  }
  var seen = Set<String>()
  return paths.filter { seen.insert($0).inserted }
}

/// The part after the last slash (and after a Windows drive prefix such as "C:").
func lastComponent(_ path: String) -> String {
  var name = path
  if let slash = name.lastIndex(of: "/") { name = String(name[name.index(after: slash)...]) }
  if name.count >= 2, name.dropFirst().first == ":" { name = String(name.dropFirst(2)) }
  return name
}
