import Logging
import VDiskCore

/// One partition of a disk view, in bytes, as the Linux kernel would number it.
public struct Partition: Sendable, Equatable {
  /// Kernel numbering: MBR primaries 1–4 by slot, logicals 5, 6, … in EBR chain order; GPT entry
  /// index + 1. Numbers of skipped entries are not reused (a gap, as `/dev/sdaN` would show).
  public var number: Int
  /// Offset of the first byte in the disk view.
  public var start: UInt64
  /// Bytes, clipped to the disk (and for GPT to the header's last usable LBA).
  public var length: UInt64
  /// MBR: the type byte as `0x83` (two lowercase hex digits). GPT: the partition type GUID in
  /// canonical text form, upper case (`0FC63DAF-8483-4772-8E79-3D69D8477DE4`), as sfdisk shows it.
  public var type: String
  /// GPT: the partition name (UTF-16LE, up to the first NUL; "" when unnamed). MBR: nil.
  public var name: String?

  public init(number: Int, start: UInt64, length: UInt64, type: String, name: String? = nil) {
    self.number = number
    self.start = start
    self.length = length
    self.type = type
    self.name = name
  }
}

/// Reads MBR and GPT partition tables. Pure parsing over a `ByteView`: no formats, no FUSE.
///
/// Policy for damaged or hostile tables (everything the disk says is bounded before it sizes a
/// read or an allocation):
/// - A table that cannot be trusted as a whole (bad GPT header or entry CRC in both copies, an
///   impossible entry size, …) gives no partitions and one warning.
/// - A partition starting past the end of the disk is skipped; one reaching past it is clipped.
///   Each is logged. Numbers of skipped partitions stay unused.
/// - Overlapping partitions are all kept (the kernel keeps them too, and hiding one would hide
///   data); one warning names the overlapping pairs.
/// - An extended partition's container is not listed (only its logicals), as its bytes are the
///   logicals' and their EBRs.
public enum PartitionTable {
  /// Tables are read with 512-byte logical sectors (what disk images use).
  public static let sectorSize: UInt64 = 512

  /// Reads the partition table of `view` (512-byte sectors): GPT when LBA 0 holds a protective or
  /// hybrid MBR (an entry of type 0xEE), from the primary header at LBA 1 or, when that or its
  /// entry array is damaged, from the backup header at the last LBA (logged); else MBR primaries
  /// and the EBR chain of the first extended partition, like Linux's msdos parser. The MBR entries
  /// of a hybrid MBR are never used, even when its GPT is unreadable (Linux's msdos parser also
  /// leaves any disk with an 0xEE entry alone).
  ///
  /// Never throws for faults of the table itself (see the type's policy); throws only what the
  /// view throws when reading it.
  public static func read(_ view: any ByteView, logger: Logger) throws -> [Partition] {
    let disk = Disk(view)
    let log = TableLog(logger)
    let partitions: [Partition]
    do {
      partitions = try readTable(disk, log)
    } catch let failure as ViewReadFailure {
      throw failure.underlying
    } catch {
      log.warning("partition table ignored: \(error)")
      return []
    }
    reportOverlaps(partitions, log)
    return partitions
  }

  private static func readTable(_ disk: Disk, _ log: TableLog) throws -> [Partition] {
    guard disk.sectors >= 1, let sector0 = try disk.sector(0) else {
      log.debug("disk of \(disk.size) bytes is smaller than one sector: no partition table")
      return []
    }
    guard let mbr = MBRSector(sector0) else {
      if disk.sectors >= 2, let sector1 = try disk.sector(1), sector1.starts(with: GPTHeader.signature) {
        // Linux (without the `gpt` boot option) and libblkid require the protective MBR too.
        log.warning("LBA 1 holds a GPT header but LBA 0 has no MBR signature (no protective MBR): ignored")
      } else {
        log.debug("no MBR signature at LBA 0: no partition table")
      }
      return []
    }
    if mbr.entries.contains(where: { $0.type == MBREntry.gptProtective }) {
      return try GPT.partitions(disk, log)
    }
    return try MBR.partitions(mbr, disk, log)
  }

  /// Logs once when partitions overlap (sorted by start, each against the one reaching furthest
  /// before it: at most one pair per partition, O(n log n)).
  static func reportOverlaps(_ partitions: [Partition], _ log: TableLog) {
    let sorted = partitions.sorted { ($0.start, $0.number) < ($1.start, $1.number) }
    var pairs: [(Int, Int)] = []
    var furthest: Partition?
    for p in sorted {
      if let f = furthest, p.start < f.start + f.length {
        pairs.append((f.number, p.number))
      }
      if furthest.map({ p.start + p.length > $0.start + $0.length }) ?? true { furthest = p }
    }
    guard !pairs.isEmpty else { return }
    let shown = pairs.prefix(8).map { "\($0.0) and \($0.1)" }.joined(separator: ", ")
    let more = pairs.count > 8 ? " (\(pairs.count) pairs in all)" : ""
    log.warning("overlapping partitions kept: \(shown)\(more)")
  }
}

/// The disk as 512-byte sectors. Reads are bounds- and overflow-checked; an error of the view is
/// wrapped in `ViewReadFailure` so that `PartitionTable.read` can tell it from a table fault.
struct Disk {
  let view: any ByteView
  let size: UInt64

  init(_ view: any ByteView) {
    self.view = view
    self.size = view.size
  }

  /// Whole sectors (a trailing partial sector is not addressable, as for the kernel).
  var sectors: UInt64 { size / PartitionTable.sectorSize }

  /// `count` bytes at `offset`, or nil when they are not all on the disk.
  func bytes(at offset: UInt64, count: Int) throws -> [UInt8]? {
    guard count >= 0 else { return nil }
    let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
    guard !overflow, end <= size else { return nil }
    var buffer = [UInt8](repeating: 0, count: count)
    let done = try buffer.withUnsafeMutableBytes { buffer in
      var done = 0
      while done < count {
        let n: Int
        do {
          n = try view.read(
            into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), at: offset + UInt64(done))
        } catch {
          throw ViewReadFailure(underlying: error)
        }
        guard n > 0 else { break }
        done += n
      }
      return done
    }
    return done == count ? buffer : nil
  }

  /// Sector `lba`, or nil when it is not (wholly) on the disk.
  func sector(_ lba: UInt64) throws -> [UInt8]? {
    let (offset, overflow) = lba.multipliedReportingOverflow(by: PartitionTable.sectorSize)
    guard !overflow else { return nil }
    return try bytes(at: offset, count: Int(PartitionTable.sectorSize))
  }

  /// A partition of `count` sectors from `lba`, clipped to the disk's whole sectors (logged); nil,
  /// logged, when it starts at or past their end. Every product and sum is overflow-checked (an LBA
  /// of 2^55 or more is past any disk).
  func partition(
    number: Int, lba: UInt64, count: UInt64, type: String, name: String? = nil, _ log: TableLog
  ) -> Partition? {
    let size = sectors * PartitionTable.sectorSize
    let (start, startOverflow) = lba.multipliedReportingOverflow(by: PartitionTable.sectorSize)
    guard !startOverflow, start < size else {
      log.warning(
        "partition \(number) starts at LBA \(lba), past the end of the disk (\(sectors) sectors): skipped")
      return nil
    }
    let (endLBA, endOverflow) = lba.addingReportingOverflow(count)
    let (end, overflow) = endLBA.multipliedReportingOverflow(by: PartitionTable.sectorSize)
    guard !endOverflow, !overflow, end <= size else {
      log.warning(
        "partition \(number) (LBA \(lba), \(count) sectors) reaches past the end of the disk "
          + "(\(sectors) sectors): clipped to \(size - start) bytes")
      return Partition(number: number, start: start, length: size - start, type: type, name: name)
    }
    return Partition(number: number, start: start, length: end - start, type: type, name: name)
  }
}

/// An error thrown by the view while reading the table: rethrown as is by `PartitionTable.read`.
struct ViewReadFailure: Error {
  var underlying: any Error
}

/// A reason to distrust a whole table (or one GPT header), for the log.
struct TableFault: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// The log of one table read, capped so that a hostile table of thousands of bad entries cannot
/// flood the log.
final class TableLog {
  static let cap = 32
  let logger: Logger
  private(set) var warnings = 0

  init(_ logger: Logger) { self.logger = logger }

  func warning(_ message: @autoclosure () -> String) {
    warnings += 1
    if warnings <= Self.cap {
      logger.warning("\(message())")
    } else if warnings == Self.cap + 1 {
      logger.warning("further partition table warnings suppressed")
    }
  }

  func debug(_ message: @autoclosure () -> String) {
    logger.debug("\(message())")
  }
}
