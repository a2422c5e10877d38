import VDiskCore

/// The region table (vhdx-notes, "Region table"; MS-VHDX 2.2.3): where the BAT and the metadata
/// region live. Two copies at 192 KiB and 256 KiB; the first whose signature and CRC-32C check
/// out is used.
struct RegionTable: Sendable {
  static let offsets: [UInt64] = [192 << 10, 256 << 10]
  static let size = 64 << 10
  /// "regi" as a little-endian u32.
  static let signature: UInt32 = 0x6967_6572
  static let maxEntries = 2047
  static let batGuid = GUID(0x2DC2_7766, 0xF623, 0x4200, [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08])
  static let metadataGuid = GUID(
    0x8B7C_A206, 0x4790, 0x4B9A, [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E])

  struct Region: Sendable, Equatable {
    var offset: UInt64
    var length: UInt64
    var range: Range<UInt64> { offset..<offset + length }
  }

  var bat: Region
  var metadata: Region
  /// Which copy was used (1 or 2).
  var copy: Int

  init(_ source: ReplayedFile, header: VHDXHeader) throws {
    let path = source.file.path
    var faults: [String] = []
    var chosen: (bytes: [UInt8], copy: Int)?
    for copy in 1...2 {
      let bytes = try source.readBytes(
        at: Self.offsets[copy - 1], count: Self.size, what: "region table \(copy)")
      let r = ByteReader(bytes, path: path, baseOffset: Self.offsets[copy - 1])
      if try r.u32le(0) != Self.signature {
        faults.append("region table \(copy): no \"regi\" signature")
      } else if !CRC32C.isValid(bytes) {
        faults.append("region table \(copy): CRC-32C mismatch")
      } else {
        chosen = (bytes, copy)
        break
      }
    }
    guard let chosen else {
      throw VDiskError.corrupt(
        path, at: Self.offsets[0], "neither VHDX region table is valid: \(faults.joined(separator: "; "))")
    }
    let base = Self.offsets[chosen.copy - 1]
    let r = ByteReader(chosen.bytes, path: path, baseOffset: base)
    let count = Int(try r.u32le(8))
    guard count <= Self.maxEntries else {
      throw VDiskError.corrupt(
        path, at: base + 8, "region table \(chosen.copy) claims \(count) entries; at most 2047 fit")
    }
    let mib: UInt64 = 1 << 20
    var bat: Region?
    var metadata: Region?
    // The header section and the log are regions too, for the overlap check.
    var taken: [(String, Region)] = [("header section", Region(offset: 0, length: mib))]
    if header.logLength != 0 {
      taken.append(("log", Region(offset: header.logOffset, length: UInt64(header.logLength))))
    }
    for i in 0..<count {
      let at = 16 + 32 * i
      let guid = GUID(onDisk: try r.bytes(at, count: 16))
      let offset = try r.u64le(at + 16)
      let length = UInt64(try r.u32le(at + 24))
      let required = try r.u32le(at + 28) & 1 != 0
      let name: String =
        switch guid {
        case Self.batGuid: "BAT region"
        case Self.metadataGuid: "metadata region"
        default: "region {\(guid)}"
        }
      let (end, overflow) = offset.addingReportingOverflow(length)
      guard offset % mib == 0, length % mib == 0, length > 0, !overflow, end <= source.size else {
        throw VDiskError.corrupt(
          path, at: base + UInt64(at),
          "\(name) at \(hex(offset)) (length \(hex(length))) is not 1 MiB aligned within the file (size \(hex(source.size)))"
        )
      }
      let region = Region(offset: offset, length: length)
      if let clash = taken.first(where: { $0.1.range.overlaps(region.range) }) {
        throw VDiskError.corrupt(
          path, at: base + UInt64(at),
          "\(name) at \(hex(offset)) overlaps the \(clash.0) at \(hex(clash.1.offset))")
      }
      taken.append((name, region))
      switch guid {
      case Self.batGuid:
        guard bat == nil else { throw VDiskError.corrupt(path, at: base, "region table lists the BAT twice") }
        bat = region
      case Self.metadataGuid:
        guard metadata == nil else {
          throw VDiskError.corrupt(path, at: base, "region table lists the metadata region twice")
        }
        metadata = region
      default:
        if required {
          throw VDiskError.unsupported(path, "the image requires the unknown region {\(guid)}")
        }
      }
    }
    guard let bat, let metadata else {
      throw VDiskError.corrupt(
        path, at: base, "region table \(chosen.copy) lacks the \(bat == nil ? "BAT" : "metadata") region")
    }
    self.bat = bat
    self.metadata = metadata
    copy = chosen.copy
  }
}
