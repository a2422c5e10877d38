import VDiskCore

/// The qcow version 1 header (qcow.asciidoc, "File header – version 1"; all fields big-endian),
/// validated as QEMU's qcow driver validates it, and against the file.
public struct QCOW1Header: Sendable {
  /// qcow.asciidoc: "QFI\xfb", then version 1.
  static let magic: [UInt8] = [0x51, 0x46, 0x49, 0xFB]
  static let size = 48
  /// QEMU: cluster_bits in [9, 16] (512 bytes to 64 KiB).
  static let clusterBitsRange: ClosedRange<UInt8> = 9...16
  /// QEMU: l2_bits in [6, 13] (L2 tables of 512 bytes to 64 KiB).
  static let l2BitsRange: ClosedRange<UInt8> = 6...13
  /// qcow.asciidoc, "Encryption methods": 0 none, 1 AES-CBC.
  static let cryptNone: UInt32 = 0
  static let cryptAES: UInt32 = 1
  /// QEMU's limit on a backing file name.
  static let maxNameLength: UInt32 = 1023
  /// QEMU's limit on the L1 table (INT_MAX bytes); far more than the file ever holds.
  static let maxL1Entries: UInt64 = UInt64(Int32.max) / 8

  public var backingFileName: String?
  /// The size field as stored; the disk is its whole sectors (QEMU: total_sectors = size / 512).
  public var size: UInt64
  public var clusterBits: UInt8
  public var l2Bits: UInt8
  public var l1Offset: UInt64
  public var mtime: UInt32

  public var virtualSize: UInt64 { size / 512 * 512 }
  var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
  /// Entries per L2 table.
  var l2Entries: UInt64 { 1 << UInt64(l2Bits) }
  /// Guest bytes one L2 table maps.
  var l2Coverage: UInt64 { 1 << UInt64(clusterBits + l2Bits) }
  /// QEMU: l1_size = ceil(size / l2Coverage).
  var l1Entries: UInt64 { size / l2Coverage + (size % l2Coverage == 0 ? 0 : 1) }

  /// Whether `bytes` start with the qcow magic (any version).
  public static func hasMagic(_ bytes: some Collection<UInt8>) -> Bool {
    bytes.prefix(4).elementsEqual(magic)
  }

  public init(file: ImageFile) throws {
    let path = file.path
    guard file.size >= UInt64(Self.size) else {
      throw VDiskError.corrupt(path, "file of \(file.size) bytes is too small for a qcow header")
    }
    let r = ByteReader(try file.readBytes(at: 0, count: Self.size, what: "qcow header"), path: path)
    guard try r.bytes(0, count: 4, "magic").elementsEqual(Self.magic) else {
      throw VDiskError.corrupt(path, at: 0, "no qcow magic \"QFI\\xfb\" at offset 0")
    }
    let version = try r.u32be(4, "version")
    guard version == 1 else {
      throw VDiskError.unsupported(path, "qcow version \(version) is not supported by the qcow (v1) driver")
    }
    let nameOffset = try r.u64be(8, "backing file name offset")
    let nameSize = try r.u32be(16, "backing file name size")
    mtime = try r.u32be(20, "modification time")
    size = try r.u64be(24, "size")
    clusterBits = try r.u8(32, "cluster bits")
    l2Bits = try r.u8(33, "L2 bits")
    let crypt = try r.u32be(36, "encryption method")
    l1Offset = try r.u64be(40, "L1 table offset")

    func corrupt(_ offset: UInt64, _ detail: String) -> VDiskError {
      VDiskError.corrupt(path, at: offset, detail)
    }
    guard crypt == Self.cryptNone else {
      if crypt == Self.cryptAES { throw VDiskError.unsupported(path, "encrypted images are not supported") }
      throw corrupt(36, "invalid qcow encryption method \(crypt)")
    }
    guard size > 1 else { throw corrupt(24, "qcow image size \(size) is too small (at least 2 bytes)") }
    guard Self.clusterBitsRange.contains(clusterBits) else {
      throw corrupt(32, "qcow cluster bits \(clusterBits) are not between 9 and 16 (512 bytes to 64 KiB)")
    }
    guard Self.l2BitsRange.contains(l2Bits) else {
      throw corrupt(33, "qcow L2 bits \(l2Bits) are not between 6 and 13 (tables of 512 bytes to 64 KiB)")
    }
    guard size <= UInt64.max - l2Coverage, l1Entries <= Self.maxL1Entries else {
      throw corrupt(24, "qcow image size \(size) is too large")
    }
    let (l1End, overflow) = l1Offset.addingReportingOverflow(l1Entries * 8)
    guard !overflow, l1End <= file.size else {
      throw corrupt(
        40,
        "qcow L1 table at \(hex(l1Offset)) (\(l1Entries) entries) lies outside the file (size \(hex(file.size)))"
      )
    }
    backingFileName = nil
    if nameOffset != 0 {
      let (nameEnd, o) = nameOffset.addingReportingOverflow(UInt64(nameSize))
      guard nameSize <= Self.maxNameLength, !o, nameEnd <= file.size else {
        throw corrupt(
          8,
          "qcow backing file name at \(hex(nameOffset)) (\(nameSize) bytes) lies outside the file or is longer than \(Self.maxNameLength) bytes"
        )
      }
      let bytes = try file.readBytes(at: nameOffset, count: Int(nameSize), what: "qcow backing file name")
      guard !bytes.contains(0) else {
        throw corrupt(nameOffset, "qcow backing file name contains a NUL byte")
      }
      backingFileName = bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
    }
  }
}
