import Foundation
import VDiskCore

/// Reading back a file `VHDXBuilder` laid out and a writer then changed, in test code and apart
/// from the VHDX target, so that images QEMU cannot open (differencing VHDX) still have a judge
/// other than the code that wrote them. A writer keeps the builder's layout (the BAT at
/// `batOffset`, the block and sector sizes), so those come from the builder.
extension VHDXBuilder {
  /// The fields of a header that tests look at (vhdx-notes, "Header").
  public struct Header: Sendable, Equatable {
    public var sequenceNumber: UInt64
    public var dataWriteGuid: GUID
    public var logGuid: GUID
    public var logOffset: UInt64
    public var logLength: UInt64
  }

  /// The current header of the VHDX at `path`: of the two slots (64 KiB and 128 KiB) whose
  /// signature and checksum are good, the one with the larger SequenceNumber.
  public static func currentHeader(of path: String) throws -> Header {
    var best: Header?
    for slot in [UInt64(64 << 10), 128 << 10] {
      let bytes = try readBytes(path, at: slot, count: 4096)
      guard bytes.count == 4096, bytes[0..<4].elementsEqual("head".utf8), hasValidChecksum(bytes) else {
        continue
      }
      let header = Header(
        sequenceNumber: le(bytes, 8, 8), dataWriteGuid: GUID(onDisk: bytes[32..<48]),
        logGuid: GUID(onDisk: bytes[48..<64]), logOffset: le(bytes, 72, 8), logLength: le(bytes, 68, 4))
      if best.map({ header.sequenceNumber > $0.sequenceNumber }) ?? true { best = header }
    }
    guard let best else { throw VHDXReadBackError("\(path): no valid VHDX header") }
    return best
  }

  /// Whether the log of the VHDX at `path` holds an entry to replay: a 4 KiB-aligned entry with
  /// the "loge" signature, the current header's LogGuid, an EntryLength within the log and a
  /// good CRC-32C over the whole entry (vhdx-notes, "Log entry" and "Replay", steps 1-2).
  /// Entries that wrap around the log's end are not looked for: vdiskfs starts each entry at the
  /// log's beginning.
  public static func hasPendingLog(_ path: String) throws -> Bool {
    let header = try currentHeader(of: path)
    guard !header.logGuid.isZero, header.logLength > 0 else { return false }
    let log = try readBytes(path, at: header.logOffset, count: Int(min(header.logLength, 64 << 20)))
    for start in stride(from: 0, to: log.count - 4096 + 1, by: 4096) {
      guard log[start..<start + 4].elementsEqual("loge".utf8),
        GUID(onDisk: log[start + 32..<start + 48]) == header.logGuid
      else { continue }
      let length = Int(le(log, start + 8, 4))
      guard length >= 4096, length % 4096 == 0, start + length <= log.count else { continue }
      if hasValidChecksum(Array(log[start..<start + length])) { return true }
    }
    return false
  }

  /// What a guest reads from the VHDX at `path` (which must have no pending log), over `parent`
  /// (nil: none) where a differencing file's BAT says NOT_PRESENT or its sector bitmap has a 0
  /// (vhdx-notes, "BAT (block allocation table) region").
  public func guestBytes(of path: String, over parent: [UInt8]?) throws -> [UInt8] {
    let file = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    func entry(_ index: UInt64) throws -> UInt64 {
      let at = Int(Self.batOffset + 8 * index)
      guard at + 8 <= file.count else { throw VHDXReadBackError("\(path): BAT entry \(index) past the end") }
      return Self.le(file, at, 8)
    }
    func hostBytes(_ offset: UInt64, count: Int) throws -> ArraySlice<UInt8> {
      guard offset >= 1 << 20, offset + UInt64(count) <= UInt64(file.count) else {
        throw VHDXReadBackError("\(path): \(count) bytes at \(offset) lie outside the file")
      }
      return file[Int(offset)..<Int(offset) + count]
    }
    var out = [UInt8](repeating: 0, count: Int(virtualSize))
    if let parent { out.replaceSubrange(0..<min(parent.count, out.count), with: parent.prefix(out.count)) }
    let sector = Int(logicalSectorSize)
    for block in 0..<dataBlocks {
      let value = try entry(block + block / chunkRatio)
      let host = value & ~0xF_FFFF
      let start = Int(block * blockSize)
      let count = min(Int(blockSize), out.count - start)
      switch value & 7 {
      case 0:
        break  // the parent's bytes (or, without a parent, the zeros already there)
      case 1, 2, 3:
        out.replaceSubrange(start..<start + count, with: repeatElement(0, count: count))
      case 6:
        out.replaceSubrange(start..<start + count, with: try hostBytes(host, count: count))
      case 7 where locator != nil:
        let chunk = block / chunkRatio
        let bitmapEntry = try entry(chunk * (chunkRatio + 1) + chunkRatio)
        guard bitmapEntry & 7 == 6 else {
          throw VHDXReadBackError(
            "\(path): block \(block) is partial but chunk \(chunk) has no sector bitmap")
        }
        let bits = try hostBytes(bitmapEntry & ~0xF_FFFF, count: 1 << 20)
        let firstBit = Int((block % chunkRatio) * (blockSize / logicalSectorSize))
        for s in 0..<(count + sector - 1) / sector {
          let bit = firstBit + s
          guard bits[bits.startIndex + bit / 8] & (1 << UInt8(bit % 8)) != 0 else { continue }
          let n = min(sector, count - s * sector)
          let data = try hostBytes(host + UInt64(s * sector), count: n)
          out.replaceSubrange(start + s * sector..<start + s * sector + n, with: data)
        }
      default:
        throw VHDXReadBackError("\(path): block \(block) has BAT entry \(String(value, radix: 16))")
      }
    }
    return out
  }

  /// Up to `count` bytes of `path` at `offset` (pread(2): cheap enough to poll a running writer).
  private static func readBytes(_ path: String, at offset: UInt64, count: Int) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw VHDXReadBackError("\(path): open: errno \(errno)") }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: count)
    let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
    guard n >= 0 else { throw VHDXReadBackError("\(path): pread: errno \(errno)") }
    bytes.removeLast(count - n)
    return bytes
  }

  private static func le(_ bytes: [UInt8], _ offset: Int, _ width: Int) -> UInt64 {
    (0..<width).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[offset + $1]) }
  }

  /// The little-endian CRC-32C at byte 4 matches the structure with that field read as zero.
  private static func hasValidChecksum(_ bytes: [UInt8]) -> Bool {
    var zeroed = bytes
    zeroed.replaceSubrange(4..<8, with: [0, 0, 0, 0])
    return UInt32(le(bytes, 4, 4)) == ReflectedCRC32.castagnoli.checksum(zeroed)
  }
}

/// A VHDX file the read-back above cannot make sense of.
struct VHDXReadBackError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
