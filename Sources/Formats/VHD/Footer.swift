import VDiskCore

/// The 512-byte hard disk footer (vhd.asciidoc, "Footer"; all fields big-endian). Every VHD ends
/// with one; dynamic and differencing disks also keep a copy at offset 0.
public struct VHDFooter: Sendable, Equatable {
  /// vhd.asciidoc, "Disk type".
  public enum DiskType: UInt32, Sendable {
    case fixed = 2
    case dynamic = 3
    case differencing = 4

    var name: String {
      switch self {
      case .fixed: "fixed"
      case .dynamic: "dynamic"
      case .differencing: "differencing"
      }
    }
  }

  static let size = 512
  static let cookie = Array("conectix".utf8)
  /// Byte range of the checksum field, counted as zero when summing.
  static let checksumField = 64..<68
  /// qemu's VHD_MAX_SECTORS: BAT entries are 32-bit sector numbers, so about 2040 GiB.
  static let maxSectors: UInt64 = 0xFF00_0000
  /// 65535 cylinders x 16 heads x 255 sectors: a disk this size or larger cannot be described by
  /// its geometry (vhd-notes.md, "Which size is the disk?").
  static let maxGeometrySectors: UInt64 = 65535 * 16 * 255
  /// Creators whose images take their size from current_size rather than the CHS geometry
  /// (vhd-notes.md, "Which size is the disk?": qemu's table; anything else uses CHS).
  static let currentSizeCreators: [[UInt8]] = [
    Array("win ".utf8), Array("qem2".utf8), Array("d2v ".utf8), Array("CTXS".utf8), [0x74, 0x61, 0x70, 0x00],
  ]

  public var dataOffset: UInt64
  public var creatorApp: [UInt8]
  public var originalSize: UInt64
  public var currentSize: UInt64
  public var cylinders: UInt16
  public var heads: UInt8
  public var sectorsPerTrack: UInt8
  public var diskType: DiskType
  public var uniqueID: GUID
  /// Where in the file this footer was read (file size - 512, or 0 for the copy).
  public var location: UInt64

  /// Parses a footer whose cookie and checksum have been verified (see `VHDFooter.locate`).
  init(_ bytes: [UInt8], path: String, at location: UInt64) throws {
    let r = ByteReader(bytes, path: path, baseOffset: location)
    dataOffset = try r.u64be(16, "footer data offset")
    creatorApp = Array(try r.bytes(28, count: 4, "creator application"))
    originalSize = try r.u64be(40, "original size")
    currentSize = try r.u64be(48, "current size")
    cylinders = try r.u16be(56, "cylinders")
    heads = try r.u8(58, "heads")
    sectorsPerTrack = try r.u8(59, "sectors per track")
    let type = try r.u32be(60, "disk type")
    guard let known = DiskType(rawValue: type) else {
      throw VDiskError.unsupported(
        path, "VHD disk type \(type) (footer at \(hex(location))) is not supported")
    }
    diskType = known
    uniqueID = GUID(onDisk: try r.bytes(68, count: 16, "unique id"), layout: .bigEndian)
    self.location = location
  }

  /// The sectors the CHS geometry describes.
  public var geometrySectors: UInt64 { UInt64(cylinders) * UInt64(heads) * UInt64(sectorsPerTrack) }

  /// Whether the disk size comes from the geometry (true) or from current_size: by creator
  /// application, except that the maximum geometry always defers to current_size (vhd-notes.md).
  public var sizeFromGeometry: Bool {
    !Self.currentSizeCreators.contains(creatorApp) && geometrySectors != Self.maxGeometrySectors
  }

  /// The guest-visible size in bytes (whole sectors), as qemu computes it.
  public var virtualSize: UInt64 {
    (sizeFromGeometry ? geometrySectors : currentSize / 512) * 512
  }

  /// The creator application as text ("qemu", "win ", "tap").
  public var creatorName: String {
    String(decoding: creatorApp.prefix { $0 != 0 }, as: UTF8.self)
  }

  /// Finds the footer: the one at the end of the file when its cookie and checksum are good, else
  /// the copy at offset 0 (which only dynamic and differencing disks have). Throws `.corrupt`
  /// naming what is wrong with the end one when neither is usable.
  static func locate(in file: ImageFile) throws -> VHDFooter {
    guard file.size >= UInt64(size) else {
      throw VDiskError.corrupt(file.path, "file of \(file.size) bytes is too small for a VHD footer")
    }
    let end = file.size - UInt64(size)
    let tail = try file.readBytes(at: end, count: size, what: "VHD footer")
    let problem = check(tail, at: end)
    if problem == nil { return try VHDFooter(tail, path: file.path, at: end) }
    if end > 0 {
      let head = try file.readBytes(at: 0, count: size, what: "VHD footer copy")
      if check(head, at: 0) == nil {
        let copy = try VHDFooter(head, path: file.path, at: 0)
        if copy.diskType != .fixed { return copy }
      }
    }
    throw VDiskError.corrupt(file.path, at: end, problem ?? "VHD footer at \(hex(end)) is damaged")
  }

  /// What is wrong with a footer candidate, or nil when its cookie and checksum are good.
  static func check(_ bytes: [UInt8], at offset: UInt64) -> String? {
    guard bytes.count == size, Array(bytes[0..<8]) == cookie else {
      return "no VHD footer (cookie \"conectix\") at \(hex(offset))"
    }
    let stored = bytes[checksumField].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    let computed = vhdChecksum(bytes, skipping: checksumField)
    guard stored == computed else {
      return
        "VHD footer at \(hex(offset)) has checksum \(hex(UInt64(stored))), expected \(hex(UInt64(computed)))"
    }
    return nil
  }
}

/// The checksum of a footer or dynamic disk header (vhd-notes.md, "Checksum"): the one's
/// complement of the 32-bit sum of all its bytes, the checksum field counted as zero.
func vhdChecksum(_ bytes: [UInt8], skipping field: Range<Int>) -> UInt32 {
  var sum: UInt32 = 0
  for (i, byte) in bytes.enumerated() where !field.contains(i) { sum &+= UInt32(byte) }
  return ~sum
}
