import Logging
import VDiskCore

/// One log entry (vhdx-notes, "Log entry"), validated: signature, length, CRC-32C over the whole
/// entry, LogGuid, descriptor and data-sector signatures and sequence numbers.
struct LogEntry: Sendable {
  /// "loge", "zero", "desc", "data" as little-endian u32s.
  static let signature: UInt32 = 0x6567_6F6C
  static let zeroSignature: UInt32 = 0x6F72_657A
  static let dataDescriptorSignature: UInt32 = 0x6373_6564
  static let dataSectorSignature: UInt32 = 0x6174_6164
  static let sectorSize = 4096
  /// The largest entry we read into memory; a longer one is ignored (with a warning).
  static let maxLength = 32 << 20

  enum Write: Sendable {
    /// A rebuilt 4 KiB sector (LeadingBytes + data + TrailingBytes) for `offset`.
    case data(offset: UInt64, bytes: [UInt8])
    case zero(offset: UInt64, length: UInt64)
  }

  /// Byte offset of the entry within the log.
  var position: UInt64
  var length: UInt64
  var tail: UInt64
  var sequenceNumber: UInt64
  var flushedFileOffset: UInt64
  var lastFileOffset: UInt64
  var writes: [Write]

  /// Decodes `bytes` (the whole entry, EntryLength bytes); nil with a reason when invalid.
  static func decode(_ bytes: [UInt8], position: UInt64, logGuid: GUID, path: String) -> Result<
    LogEntry, InvalidEntry
  > {
    do {
      let r = ByteReader(bytes, path: path)
      guard try r.u32le(0) == signature else { return .failure(InvalidEntry("no \"loge\" signature")) }
      let length = UInt64(try r.u32le(8))
      guard length == UInt64(bytes.count), length % UInt64(sectorSize) == 0 else {
        return .failure(InvalidEntry("entry length \(length) is not the \(bytes.count) bytes read"))
      }
      guard CRC32C.isValid(bytes) else { return .failure(InvalidEntry("CRC-32C mismatch")) }
      guard GUID(onDisk: try r.bytes(32, count: 16)) == logGuid else {
        return .failure(InvalidEntry("LogGuid differs from the header's"))
      }
      let sequence = try r.u64le(16)
      guard sequence != 0 else { return .failure(InvalidEntry("sequence number 0")) }
      let descriptorCount = UInt64(try r.u32le(24))
      // 64-byte header = two descriptor slots; 128 descriptors per 4 KiB sector.
      let descriptorSectors = (descriptorCount + 2 + 127) / 128
      guard descriptorSectors * UInt64(sectorSize) <= length else {
        return .failure(InvalidEntry("\(descriptorCount) descriptors do not fit in \(length) bytes"))
      }
      var writes: [Write] = []
      var dataSector = Int(descriptorSectors) * sectorSize
      for d in 0..<Int(descriptorCount) {
        let at = 64 + 32 * d
        let kind = try r.u32le(at)
        guard try r.u64le(at + 24) == sequence else {
          return .failure(InvalidEntry("descriptor \(d) has another sequence number"))
        }
        let fileOffset = try r.u64le(at + 16)
        guard fileOffset % UInt64(sectorSize) == 0 else {
          return .failure(InvalidEntry("descriptor \(d) targets unaligned offset \(hex(fileOffset))"))
        }
        switch kind {
        case zeroSignature:
          let zeroLength = try r.u64le(at + 8)
          guard zeroLength % UInt64(sectorSize) == 0 else {
            return .failure(InvalidEntry("zero descriptor \(d) has unaligned length \(zeroLength)"))
          }
          writes.append(.zero(offset: fileOffset, length: zeroLength))
        case dataDescriptorSignature:
          guard dataSector + sectorSize <= bytes.count else {
            return .failure(InvalidEntry("data descriptor \(d) has no data sector"))
          }
          guard try r.u32le(dataSector) == dataSectorSignature,
            UInt64(try r.u32le(dataSector + 4)) == sequence >> 32,
            UInt64(try r.u32le(dataSector + 4092)) == sequence & 0xFFFF_FFFF
          else {
            return .failure(InvalidEntry("data sector of descriptor \(d) has a bad signature or sequence"))
          }
          // Leading 8 bytes and trailing 4 bytes come from the descriptor.
          let sector =
            Array(try r.bytes(at + 8, count: 8)) + Array(try r.bytes(dataSector + 8, count: 4084))
            + Array(try r.bytes(at + 4, count: 4))
          writes.append(.data(offset: fileOffset, bytes: sector))
          dataSector += sectorSize
        default:
          return .failure(InvalidEntry("descriptor \(d) has an unknown signature"))
        }
      }
      return .success(
        LogEntry(
          position: position, length: length, tail: UInt64(try r.u32le(12)), sequenceNumber: sequence,
          flushedFileOffset: try r.u64le(48), lastFileOffset: try r.u64le(56), writes: writes))
    } catch {
      return .failure(InvalidEntry("truncated structure"))
    }
  }

  struct InvalidEntry: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
  }
}

/// Finding and replaying the active log sequence (vhdx-notes, "Replay"; MS-VHDX 2.3.3) into a
/// `ReplayedFile`, never writing the image.
enum VHDXLog {
  /// The most a replay may make the file seem to be (beyond a 64 TiB disk and its metadata).
  static let maxReplayedSize: UInt64 = 1 << 50
  /// The longest log we scan (Hyper-V and qemu write 1 MiB logs).
  static let maxLogLength: UInt64 = 256 << 20

  static func replay(_ file: ImageFile, header: VHDXHeader, logger: Logger) throws -> (ReplayedFile, Int) {
    guard header.hasLog else { return (ReplayedFile(file: file), 0) }
    let logLength = UInt64(header.logLength)
    guard logLength <= maxLogLength else {
      throw VDiskError.unsupported(
        file.path,
        "the VHDX log to replay is \(logLength >> 20) MiB; at most \(maxLogLength >> 20) MiB is supported")
    }

    // Every 4 KiB log sector that starts a valid entry (entries are read wrapping at the end).
    var valid: [UInt64: LogEntry] = [:]
    var chunkStart: UInt64 = 0
    let chunkSize: UInt64 = 1 << 20
    var budget = scanBudget(logLength: logLength)
    while chunkStart < logLength {
      let count = Int(min(chunkSize, logLength - chunkStart))
      let chunk = try file.readBytes(at: header.logOffset + chunkStart, count: count, what: "log")
      for s in stride(from: 0, to: count, by: LogEntry.sectorSize) {
        guard chunk[s] == 0x6C, chunk[s + 1] == 0x6F, chunk[s + 2] == 0x67, chunk[s + 3] == 0x65 else {
          continue
        }
        let position = chunkStart + UInt64(s)
        let length =
          UInt64(chunk[s + 8]) | UInt64(chunk[s + 9]) << 8 | UInt64(chunk[s + 10]) << 16
          | UInt64(chunk[s + 11]) << 24
        guard length > 0, length % UInt64(LogEntry.sectorSize) == 0, length <= logLength else { continue }
        guard length <= UInt64(LogEntry.maxLength) else {
          logger.warning(
            "ignoring a VHDX log entry longer than we read",
            metadata: ["path": "\(file.path)", "length": "\(length)"])
          continue
        }
        // An entry of another log (an older LogGuid) is not read at all (vhdx-notes, "Log entry").
        guard GUID(onDisk: chunk[s + 32..<s + 48]) == header.logGuid else { continue }
        guard length <= budget else {
          throw VDiskError.corrupt(
            file.path, at: header.logOffset + position,
            "the VHDX log's entry headers claim more than \(scanBudget(logLength: logLength) >> 20) MiB to check in a \(logLength >> 20) MiB log"
          )
        }
        budget -= length
        let bytes = try readLog(file, header: header, at: position, count: Int(length))
        switch LogEntry.decode(bytes, position: position, logGuid: header.logGuid, path: file.path) {
        case .success(let entry): valid[position] = entry
        case .failure(let why):
          logger.debug(
            "ignoring VHDX log entry",
            metadata: ["path": "\(file.path)", "at": "\(position)", "why": "\(why)"])
        }
      }
      chunkStart += UInt64(count)
    }
    guard let sequence = try activeSequence(valid, logLength: logLength, path: file.path) else {
      return (ReplayedFile(file: file), 0)
    }
    return (try apply(sequence, to: file, header: header), sequence.count)
  }

  /// The most bytes the scan reads and checksums as candidate entries. Each 4 KiB sector may
  /// claim to start an entry of up to `LogEntry.maxLength` bytes, so without a bound a hostile log
  /// costs sectors × entry length (2 TiB for a 256 MiB log). A real log's entry headers, current
  /// ones and stale ones of earlier passes (same LogGuid), claim at most a few times its length.
  static func scanBudget(logLength: UInt64) -> UInt64 { 4 * logLength + UInt64(LogEntry.maxLength) }

  /// `count` bytes of the log from `position`, wrapping at its end.
  static func readLog(_ file: ImageFile, header: VHDXHeader, at position: UInt64, count: Int) throws
    -> [UInt8]
  {
    let logLength = UInt64(header.logLength)
    let first = Int(min(UInt64(count), logLength - position))
    var bytes = try file.readBytes(at: header.logOffset + position, count: first, what: "log entry")
    if first < count {
      bytes += try file.readBytes(at: header.logOffset, count: count - first, what: "log entry")
    }
    return bytes
  }

  /// The active sequence (MS-VHDX 2.3.3): of the valid entries taken as the head of a sequence,
  /// highest sequence number first, the first whose Tail leads through valid entries, each
  /// directly after the previous one (wrapping) with sequence numbers increasing by exactly 1, to
  /// that head. Empty when there is none.
  /// The walk is bounded: a log that needs more than a few steps per entry to sort out is corrupt.
  static func activeSequence(_ valid: [UInt64: LogEntry], logLength: UInt64, path: String) throws
    -> [LogEntry]?
  {
    var budget = 4 * valid.count + 1024
    for head in valid.values.sorted(by: { $0.sequenceNumber > $1.sequenceNumber }) {
      var chain: [LogEntry] = []
      var position = head.tail
      while chain.count <= valid.count, let entry = valid[position] {
        budget -= 1
        guard budget > 0 else {
          throw VDiskError.corrupt(path, "the VHDX log holds too many entries that do not form a sequence")
        }
        if let last = chain.last, entry.sequenceNumber != last.sequenceNumber &+ 1 { break }
        chain.append(entry)
        if entry.position == head.position {
          if entry.sequenceNumber == head.sequenceNumber { return chain }
          break
        }
        position = (entry.position + entry.length) % logLength
      }
    }
    return nil
  }

  /// Applies `sequence` in order to an overlay (vhdx-notes, "Replay", steps 4-5).
  static func apply(_ sequence: [LogEntry], to file: ImageFile, header: VHDXHeader) throws -> ReplayedFile {
    var sectors: [UInt64: [UInt8]] = [:]
    var zeros: [Range<UInt64>] = []
    var size = file.size
    let headerArea = VHDXHeader.offsets[1] + UInt64(64 << 10)
    for entry in sequence {
      let fault = "log entry \(entry.sequenceNumber) (at \(hex(header.logOffset + entry.position)))"
      guard entry.flushedFileOffset <= file.size else {
        throw VDiskError.corrupt(
          file.path, at: header.logOffset + entry.position,
          "\(fault) says the file was \(entry.flushedFileOffset) bytes, but it is \(file.size): the file was truncated"
        )
      }
      guard entry.lastFileOffset <= maxReplayedSize else {
        throw VDiskError.corrupt(
          file.path, at: header.logOffset + entry.position,
          "\(fault) has an absurd LastFileOffset \(hex(entry.lastFileOffset))")
      }
      let limit = max(size, entry.lastFileOffset)
      for write in entry.writes {
        let (offset, length): (UInt64, UInt64) =
          switch write {
          case .data(let offset, _): (offset, UInt64(LogEntry.sectorSize))
          case .zero(let offset, let length): (offset, length)
          }
        let (end, overflow) = offset.addingReportingOverflow(length)
        let logRange = header.logOffset..<header.logOffset + UInt64(header.logLength)
        guard !overflow, offset >= headerArea, end <= limit, !logRange.overlaps(offset..<end) else {
          throw VDiskError.corrupt(
            file.path, at: offset,
            "\(fault) writes \(length) bytes at \(hex(offset)), outside the file's metadata and data (file size \(hex(limit)))"
          )
        }
        switch write {
        case .data(_, let bytes):
          sectors[offset] = bytes
        case .zero:
          for key in sectors.keys where key >= offset && key < end { sectors[key] = nil }
          zeros = merge(zeros, offset..<end)
        }
      }
      // qemu rounds the extended file up to 1 MiB.
      let rounded = (entry.lastFileOffset + (1 << 20) - 1) & ~((1 << 20) - 1)
      size = max(size, rounded)
    }
    return ReplayedFile(file: file, sectors: sectors, zeroRanges: zeros, size: size)
  }

  /// `ranges` with `new` added, kept sorted and disjoint.
  static func merge(_ ranges: [Range<UInt64>], _ new: Range<UInt64>) -> [Range<UInt64>] {
    guard !new.isEmpty else { return ranges }
    var result: [Range<UInt64>] = []
    var current = new
    for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
      if r.upperBound < current.lowerBound || r.lowerBound > current.upperBound {
        result.append(r)
      } else {
        current = min(r.lowerBound, current.lowerBound)..<max(r.upperBound, current.upperBound)
      }
    }
    result.append(current)
    return result.sorted { $0.lowerBound < $1.lowerBound }
  }
}
