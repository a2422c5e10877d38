import VDiskCore

/// The file type identifier at offset 0 (vhdx-notes, "File type identifier"): the signature
/// "vhdxfile" and an informational UTF-16LE creator string.
enum VHDXFileIdentifier {
  static let signature = Array("vhdxfile".utf8)
  /// The first 1 MiB of a VHDX file is the header section (vhdx-notes, "File layout").
  static let headerSectionSize: UInt64 = 1 << 20

  /// Checks the signature and that the header section is complete; returns the creator string.
  static func read(_ file: ImageFile) throws -> String {
    guard file.size >= headerSectionSize else {
      throw VDiskError.corrupt(
        file.path, at: 0,
        "file is \(file.size) bytes, shorter than the 1 MiB VHDX header section; it is truncated")
    }
    let bytes = try file.readBytes(at: 0, count: 520, what: "file type identifier")
    guard Array(bytes[0..<8]) == signature else {
      throw VDiskError.corrupt(file.path, at: 0, "file type identifier lacks the \"vhdxfile\" signature")
    }
    return String(utf16: bytes[8..<520], order: .littleEndian)
  }
}

/// One of the two headers (vhdx-notes, "Header"; MS-VHDX 2.2.2), already checked for signature
/// and CRC-32C.
public struct VHDXHeader: Sendable, Equatable {
  /// Header 1 lives at 64 KiB, header 2 at 128 KiB; each is a 4 KiB structure.
  static let offsets: [UInt64] = [64 << 10, 128 << 10]
  static let size = 4096
  /// "head" as a little-endian u32.
  static let signature: UInt32 = 0x6461_6568

  /// 1 or 2.
  public var slot: Int
  public var sequenceNumber: UInt64
  public var fileWriteGuid: GUID
  public var dataWriteGuid: GUID
  /// All zero: no log to replay.
  public var logGuid: GUID
  public var logVersion: UInt16
  public var version: UInt16
  public var logLength: UInt32
  public var logOffset: UInt64
  /// The raw 4 KiB, to compare two headers with equal sequence numbers.
  var raw: [UInt8]

  /// Decodes a header, or says why it is not valid (bad signature or checksum).
  static func decode(_ bytes: [UInt8], slot: Int, path: String) throws -> Result<VHDXHeader, HeaderFault> {
    let r = ByteReader(bytes, path: path, baseOffset: offsets[slot - 1])
    guard try r.u32le(0, "header signature") == signature else { return .failure(.signature) }
    guard CRC32C.isValid(bytes) else { return .failure(.checksum) }
    return .success(
      VHDXHeader(
        slot: slot, sequenceNumber: try r.u64le(8), fileWriteGuid: GUID(onDisk: try r.bytes(16, count: 16)),
        dataWriteGuid: GUID(onDisk: try r.bytes(32, count: 16)),
        logGuid: GUID(onDisk: try r.bytes(48, count: 16)),
        logVersion: try r.u16le(64), version: try r.u16le(66), logLength: try r.u32le(68),
        logOffset: try r.u64le(72), raw: bytes))
  }

  enum HeaderFault: Error, CustomStringConvertible {
    case signature, checksum
    var description: String {
      switch self {
      case .signature: "no \"head\" signature"
      case .checksum: "CRC-32C mismatch"
      }
    }
  }

  /// The current header (MS-VHDX 2.2.2.1): the only valid one, or of two valid ones the one
  /// with the larger sequence number. Equal sequence numbers are accepted only for identical
  /// headers (qemu does the same for Disk2VHD images). Then checks version and log placement.
  static func current(_ file: ImageFile) throws -> VHDXHeader {
    var valid: [VHDXHeader] = []
    var faults: [String] = []
    for slot in 1...2 {
      let bytes = try file.readBytes(at: offsets[slot - 1], count: size, what: "header \(slot)")
      switch try decode(bytes, slot: slot, path: file.path) {
      case .success(let h): valid.append(h)
      case .failure(let f): faults.append("header \(slot) (at \(hex(offsets[slot - 1]))): \(f)")
      }
    }
    guard var chosen = valid.first else {
      throw VDiskError.corrupt(
        file.path, at: offsets[0], "neither VHDX header is valid: \(faults.joined(separator: "; "))")
    }
    if valid.count == 2 {
      let (a, b) = (valid[0], valid[1])
      if a.sequenceNumber == b.sequenceNumber && a.raw != b.raw {
        throw VDiskError.corrupt(
          file.path, at: offsets[0],
          "both VHDX headers have sequence number \(a.sequenceNumber) but different contents")
      }
      chosen = b.sequenceNumber > a.sequenceNumber ? b : a
    }
    try chosen.validate(file)
    return chosen
  }

  /// Version fields and log placement (vhdx-notes, "Header"): LogLength and LogOffset are
  /// multiples of 1 MiB, the log lies after the header section and within the file.
  func validate(_ file: ImageFile) throws {
    let at = Self.offsets[slot - 1]
    guard version == 1 else {
      throw VDiskError.unsupported(file.path, "VHDX header \(slot) has version \(version); only 1 is known")
    }
    guard logVersion == 0 else {
      throw VDiskError.unsupported(
        file.path, "VHDX header \(slot) has log version \(logVersion); only 0 is known")
    }
    guard logLength != 0 else { return }
    let mib: UInt64 = 1 << 20
    let (end, overflow) = logOffset.addingReportingOverflow(UInt64(logLength))
    guard logOffset % mib == 0, UInt64(logLength) % mib == 0, logOffset >= mib, !overflow, end <= file.size
    else {
      throw VDiskError.corrupt(
        file.path, at: at,
        "VHDX header \(slot) places the log at \(hex(logOffset)) (length \(hex(UInt64(logLength)))), which is not 1 MiB aligned after the header section within the file (size \(hex(file.size)))"
      )
    }
  }

  /// Whether the header says a log must be replayed (vhdx-notes, "Replay", step 1).
  var hasLog: Bool { !logGuid.isZero && logLength != 0 }
}
