import VDiskCore

/// The kinds of extent a descriptor line can name (vmdk spec, "Extent type").
public enum VMDKExtentType: String, Sendable, CaseIterable {
  /// A raw extent data file (or device) starting at a sector offset.
  case flat = "FLAT"
  /// A hosted sparse extent ("KDMV"), including stream-optimized ones.
  case sparse = "SPARSE"
  /// No file: reads as zeros.
  case zero = "ZERO"
  /// A raw extent data file on VMFS (the `-flat.vmdk` of vmfs / vmfsThin disks).
  case vmfs = "VMFS"
  /// An ESX Server sparse extent ("COWD").
  case vmfsSparse = "VMFSSPARSE"
  /// A raw device mapping: names a physical device.
  case vmfsRDM = "VMFSRDM"
  /// A raw physical device.
  case vmfsRaw = "VMFSRAW"
  /// ESXi space-efficient sparse delta (see vmdk-sesparse-notes.md).
  case seSparse = "SESPARSE"
}

/// One line of the "Extent description" section: `RW 4192256 SPARSE "test-s001.vmdk"`.
public struct VMDKExtentLine: Sendable, Equatable {
  /// `RW`, `RDONLY` or `NOACCESS` (vmdk spec, "Extent access mode").
  public var access: String
  public var sectors: UInt64
  public var type: VMDKExtentType
  /// The file name as the descriptor records it (nil for ZERO extents).
  public var fileName: String?
  /// FLAT/VMFS only: where the extent starts in its file, in sectors.
  public var startSector: UInt64
}

/// A parsed VMDK descriptor (vmdk spec, "The descriptor file"): standalone text file or the
/// descriptor embedded in a hosted sparse extent.
public struct VMDKDescriptor: Sendable {
  /// Descriptors are small text; a larger one is refused before it is read.
  public static let maxSize = 1 << 20
  /// Extents one descriptor may list (a 2 GiB-split 8 TiB disk needs 4096).
  public static let maxExtents = 8192
  /// Bound on the sum of extent sizes (2^56 bytes): keeps every guest offset well inside UInt64.
  public static let maxVirtualSize: UInt64 = 1 << 56
  /// "A value of 'ffffffff' (-1) represents no parent content" (vmdk spec, "Header").
  public static let noParentCID: UInt32 = 0xffff_ffff

  public var version: Int
  public var cid: UInt32?
  public var parentCID: UInt32
  public var createType: String
  public var parentFileNameHint: String?
  public var extents: [VMDKExtentLine]

  /// Whether the disk is a delta link (vmdk spec, "Delta links").
  public var hasParent: Bool { parentCID != Self.noParentCID && parentFileNameHint != nil }

  /// Total guest size of the extents, in bytes (checked against `maxVirtualSize` when parsed).
  public var capacity: UInt64 { extents.reduce(0) { $0 + $1.sectors * 512 } }

  /// Parses descriptor text. `path` names the file it came from in errors; `requireExtents` is
  /// false for descriptors embedded in a sparse extent opened directly (their extent list names
  /// the file itself and is not needed).
  public init(bytes: [UInt8], path: String, requireExtents: Bool = true) throws {
    guard bytes.count <= Self.maxSize else {
      throw VDiskError.corrupt(path, "descriptor of \(bytes.count) bytes is larger than \(Self.maxSize)")
    }
    // An embedded descriptor is padded with NULs to whole sectors.
    let text = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    var version = 1
    var cid: UInt32?
    var parentCID = Self.noParentCID
    var createType = ""
    var hint: String?
    var extents: [VMDKExtentLine] = []
    var capacity: UInt64 = 0
    var lineNumber = 0
    var sawExtent = false
    for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
      lineNumber += 1
      let line = rawLine.trimmingWhitespace
      if line.isEmpty || line.hasPrefix("#") { continue }
      func fail(_ what: String) -> VDiskError {
        VDiskError.corrupt(path, "descriptor line \(lineNumber) (\"\(line.prefix(80))\"): \(what)")
      }
      if let entry = try Self.extentLine(line, fail: fail) {
        sawExtent = true
        // QEMU skips extents of 0 sectors (a disk of size 0 has one).
        if entry.sectors == 0 { continue }
        guard extents.count < Self.maxExtents else { throw fail("more than \(Self.maxExtents) extents") }
        let (total, overflow) = capacity.addingReportingOverflow(entry.sectors * 512)
        guard !overflow, total <= Self.maxVirtualSize else {
          throw fail("extents add up to more than \(hex(Self.maxVirtualSize)) bytes")
        }
        capacity = total
        extents.append(entry)
        continue
      }
      // "key = value" (vmdk spec: the descriptor is case-insensitive).
      guard let equals = line.firstIndex(of: "=") else { throw fail("neither a setting nor an extent") }
      let key = line[..<equals].trimmingWhitespace.lowercased()
      let value = line[line.index(after: equals)...].trimmingWhitespace.unquoted
      switch key {
      case "version":
        guard let v = Int(value), (1...3).contains(v) else { throw fail("unsupported descriptor version") }
        version = v
      case "cid":
        guard let v = UInt32(value, radix: 16) else { throw fail("CID is not a 32-bit hex number") }
        cid = v
      case "parentcid":
        guard let v = UInt32(value, radix: 16) else { throw fail("parentCID is not a 32-bit hex number") }
        parentCID = v
      case "createtype":
        createType = value
      case "parentfilenamehint":
        guard !value.isEmpty else { throw fail("empty parentFileNameHint") }
        hint = value
      default:
        break  // ddb.*, encoding, changeTrackPath, isNativeSnapshot…: nothing a reader needs.
      }
    }
    if requireExtents, !sawExtent {
      throw VDiskError.corrupt(path, "descriptor lists no extents")
    }
    if parentCID != Self.noParentCID, hint == nil {
      throw VDiskError.corrupt(
        path, "delta disk (parentCID \(String(parentCID, radix: 16))) has no parentFileNameHint")
    }
    self.version = version
    self.cid = cid
    self.parentCID = parentCID
    self.createType = createType
    self.parentFileNameHint = hint
    self.extents = extents
  }

  /// An extent line, nil when `line` is not one (vmdk spec, "Extent descriptor"):
  /// `ACCESS SECTORS TYPE ["FILENAME" [START-SECTOR]]`.
  static func extentLine(_ line: Substring, fail: (String) -> VDiskError) throws -> VMDKExtentLine? {
    let words = line.split(maxSplits: 3, whereSeparator: { $0 == " " || $0 == "\t" })
    guard let first = words.first,
      ["RW", "RDONLY", "NOACCESS", "WRONLY"].contains(first.uppercased())
    else { return nil }
    guard words.count >= 3, let sectors = UInt64(words[1]) else {
      throw fail("extent line needs an access mode, a sector count and a type")
    }
    guard let type = VMDKExtentType(rawValue: words[2].uppercased()) else {
      throw fail("unknown extent type \"\(words[2])\"")
    }
    guard sectors <= Self.maxVirtualSize / 512 else {
      throw fail("extent size of \(sectors) sectors is out of range")
    }
    var entry = VMDKExtentLine(
      access: first.uppercased(), sectors: sectors, type: type, fileName: nil, startSector: 0)
    if type == .zero { return entry }
    guard words.count == 4 else { throw fail("\(type.rawValue) extent names no file") }
    let rest = words[3]
    guard rest.first == "\"", let close = rest.dropFirst().firstIndex(of: "\"") else {
      throw fail("extent file name is not quoted")
    }
    let name = String(rest[rest.index(after: rest.startIndex)..<close])
    guard !name.isEmpty else { throw fail("extent file name is empty") }
    entry.fileName = name
    let tail = rest[rest.index(after: close)...].trimmingWhitespace
    if !tail.isEmpty {
      // The start sector; physical-device lines may add a partition UUID and a device id.
      guard let start = tail.split(separator: " ").first.flatMap({ UInt64($0) }),
        start <= Self.maxVirtualSize / 512
      else { throw fail("extent start sector \"\(tail.prefix(40))\" is not a sector number") }
      entry.startSector = start
    }
    return entry
  }

  /// Where an extent file named by the descriptor at `descriptorPath` lives. Names are relative
  /// to the descriptor's directory (vmdk spec, "Extent descriptor": "The filename is relative
  /// to the location of the VMDK descriptor file"); absolute names and `..` components, which
  /// would reach outside that directory, are refused.
  public static func extentPath(_ name: String, descriptorPath: String) throws -> String {
    guard !name.hasPrefix("/") else {
      throw VDiskError(
        .unsupported, path: descriptorPath,
        "extent file \"\(name)\" is an absolute path; extent files must lie in the descriptor's directory")
    }
    guard !name.split(separator: "/").contains(".."), !name.contains("\0") else {
      throw VDiskError(
        .unsupported, path: descriptorPath,
        "extent file \"\(name)\" reaches outside the descriptor's directory (\"..\")")
    }
    return PlanContext.resolve(name, relativeTo: descriptorPath)
  }
}

extension Substring {
  var trimmingWhitespace: Substring {
    let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }
    guard let start = firstIndex(where: { !isSpace($0) }), let end = lastIndex(where: { !isSpace($0) })
    else { return self[endIndex...] }
    return self[start...end]
  }

  /// The value without surrounding double quotes.
  var unquoted: String {
    if count >= 2, first == "\"", last == "\"" { return String(dropFirst().dropLast()) }
    return String(self)
  }
}
