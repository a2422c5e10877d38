import VDiskCore

/// One entry of the internal snapshot table (qcow2 spec, "Snapshot table entry"), decoded. Its
/// structure was checked when the table was read; `SnapshotTable.view(of:…)` checks what reading
/// the snapshot needs.
public struct QCOW2Snapshot: Sendable, Equatable {
  /// The unique ID string (`1`, `2`, …).
  public var id: String
  public var name: String
  /// Bytes 0–7 and 8–11: the snapshot's L1 table.
  public var l1TableOffset: UInt64
  public var l1Size: UInt32
  /// Bytes 16–19 and 20–23: when the snapshot was taken.
  public var dateSeconds: UInt32
  public var dateNanoseconds: UInt32
  /// Bytes 24–31: how long the guest had been running, in nanoseconds.
  public var vmClockNanoseconds: UInt64
  /// Extra data bytes 40–47 when present, else the 32-bit field at bytes 32–35.
  public var vmStateSize: UInt64
  /// Extra data bytes 48–55: the snapshot's virtual disk size; nil when the entry predates it.
  public var diskSize: UInt64?
  /// Extra data bytes 56–63: the record/replay instruction count; nil when the entry has no such
  /// field or it holds -1 (QEMU then shows no icount either).
  public var icount: UInt64?
  /// Where the entry starts in the file.
  public var entryOffset: UInt64

  /// The snapshot as `SnapshotSource` lists it; `imageSize` stands in for a missing disk size.
  public func info(imageSize: UInt64) -> SnapshotInfo {
    SnapshotInfo(
      id: id, name: name, virtualSize: diskSize ?? imageSize, vmStateSize: vmStateSize,
      dateSeconds: dateSeconds, dateNanoseconds: dateNanoseconds, vmClockNanoseconds: vmClockNanoseconds)
  }
}

/// The internal snapshot table (qcow2 spec, "Snapshots"): reading it with bounds, where it and
/// the snapshots' L1 tables lie (so that the writer never allocates over them), and what a
/// snapshot view needs. The writer never changes snapshots: their clusters are protected by their
/// refcounts, and writes to shared clusters (and shared L2 tables) copy first.
enum SnapshotTable {
  /// QEMU's limit on a snapshot entry's extra data.
  static let maxExtraData: UInt32 = 1024
  /// QEMU's limit on the size of the whole table.
  static let maxTableBytes: UInt64 = 64 << 20
  /// Header bytes 60–71: nb_snapshots (4 bytes) then snapshots_offset (8 bytes).
  static let headerFieldsOffset: UInt64 = 60

  /// The table's entries and the host bytes it spans.
  struct Table {
    var entries: [QCOW2Snapshot]
    var bytes: Range<UInt64>
  }

  /// Reads nb_snapshots and snapshots_offset from the file as it is now (one 12-byte read).
  static func headerFields(of file: ImageFile) throws -> (count: UInt32, offset: UInt64) {
    let fields = ByteReader(
      try file.readBytes(at: headerFieldsOffset, count: 12, what: "snapshot header fields"), path: file.path,
      baseOffset: headerFieldsOffset)
    return (try fields.u32be(0, "nb_snapshots"), try fields.u64be(4, "snapshots_offset"))
  }

  /// Reads the `count` entries of the table at `offset`, checking its structure only: at most
  /// 65536 entries, a cluster-aligned start, at most 64 MiB in all, at most 1 KiB of extra data
  /// per entry, every byte within the file. Reads through windows of 64 KiB, so a table costs a
  /// few reads and memory bounded by its (bounded) size.
  static func read(file: ImageFile, count: UInt32, offset: UInt64, clusterSize: UInt64) throws -> Table {
    func corrupt(_ at: UInt64, _ detail: String) -> VDiskError {
      VDiskError.corrupt(file.path, at: at, detail)
    }
    guard count > 0 else { return Table(entries: [], bytes: offset..<offset) }
    guard count <= QCOW2Header.maxSnapshots else {
      throw corrupt(headerFieldsOffset, "nb_snapshots \(count) exceeds \(QCOW2Header.maxSnapshots)")
    }
    // Also keeps every position below from overflowing.
    guard offset & (clusterSize - 1) == 0, offset <= UInt64(Int64.max) - maxTableBytes else {
      throw corrupt(headerFieldsOffset, "snapshot table offset \(hex(offset)) is invalid")
    }
    var reader = WindowReader(file: file)
    var entries: [QCOW2Snapshot] = []
    entries.reserveCapacity(Int(min(count, 1024)))
    var position = offset
    for index in 0..<Int(count) {
      let fixed = ByteReader(
        try reader.bytes(at: position, count: 40, what: "snapshot table entry \(index)"), path: file.path,
        baseOffset: position)
      let idLength = Int(try fixed.u16be(12, "snapshot ID length"))
      let nameLength = Int(try fixed.u16be(14, "snapshot name length"))
      let extraSize = try fixed.u32be(36, "snapshot extra data size")
      guard extraSize <= maxExtraData else {
        throw corrupt(
          position, "snapshot table entry \(index) has \(extraSize) bytes of extra data (limit 1024)")
      }
      let variableLength = Int(extraSize) + idLength + nameLength
      let entryLength = (40 + UInt64(variableLength) + 7) & ~7
      guard position - offset + entryLength <= maxTableBytes else {
        throw corrupt(offset, "snapshot table is larger than \(maxTableBytes >> 20) MiB")
      }
      let variable = try reader.bytes(
        at: position + 40, count: variableLength, what: "ID and name of snapshot table entry \(index)")
      let extra = ByteReader(Array(variable[0..<Int(extraSize)]), path: file.path, baseOffset: position + 40)
      let icount = extraSize >= 24 ? try extra.u64be(16, "snapshot icount") : UInt64.max
      entries.append(
        QCOW2Snapshot(
          id: String(decoding: variable[Int(extraSize)..<Int(extraSize) + idLength], as: UTF8.self),
          name: String(decoding: variable[(Int(extraSize) + idLength)...], as: UTF8.self),
          l1TableOffset: try fixed.u64be(0, "snapshot L1 table offset"),
          l1Size: try fixed.u32be(8, "snapshot L1 size"),
          dateSeconds: try fixed.u32be(16, "snapshot date"),
          dateNanoseconds: try fixed.u32be(20, "snapshot date (nanoseconds)"),
          vmClockNanoseconds: try fixed.u64be(24, "snapshot VM clock"),
          vmStateSize: extraSize >= 8
            ? try extra.u64be(0, "snapshot VM state size")
            : UInt64(try fixed.u32be(32, "snapshot VM state size")),
          diskSize: extraSize >= 16 ? try extra.u64be(8, "snapshot disk size") : nil,
          icount: icount == UInt64.max ? nil : icount,
          entryOffset: position))
      position += entryLength
    }
    return Table(entries: entries, bytes: offset..<position)
  }

  /// Host byte ranges of the snapshot table and of every snapshot's L1 table (for the writer).
  static func extents(file: ImageFile, header: QCOW2Header) throws -> [Range<UInt64>] {
    let table = try read(
      file: file, count: header.snapshotCount, offset: header.snapshotsOffset, clusterSize: header.clusterSize
    )
    guard !table.entries.isEmpty else { return [] }
    var ranges: [Range<UInt64>] = []
    for (index, snapshot) in table.entries.enumerated() {
      let bytes = UInt64(snapshot.l1Size) * 8
      let (end, overflow) = snapshot.l1TableOffset.addingReportingOverflow(bytes)
      guard snapshot.l1TableOffset & (header.clusterSize - 1) == 0, bytes <= QCOW2Header.maxL1Bytes, !overflow
      else {
        throw VDiskError.corrupt(
          file.path, at: snapshot.entryOffset,
          "snapshot \(index) has an invalid L1 table (\(hex(snapshot.l1TableOffset)), \(snapshot.l1Size) entries)"
        )
      }
      if bytes > 0 { ranges.append(snapshot.l1TableOffset..<end) }
    }
    ranges.append(table.bytes)
    return ranges
  }

  /// What a view of `snapshot` needs, checked: its virtual size (the disk size it records, else
  /// `imageSize`) within QEMU's limits, and its L1 table cluster-aligned, at most 64 MiB, within
  /// the file (of `fileSize` bytes) and long enough for that size. Returns the size and the
  /// number of L1 entries the size needs (the only ones a view reads).
  static func view(
    of snapshot: QCOW2Snapshot, header: QCOW2Header, imageSize: UInt64, fileSize: UInt64, path: String
  )
    throws -> (virtualSize: UInt64, l1Entries: Int)
  {
    func corrupt(_ detail: String) -> VDiskError {
      VDiskError.corrupt(
        path, at: snapshot.entryOffset, "snapshot \(snapshot.id) (\"\(snapshot.name)\"): \(detail)")
    }
    let size = snapshot.diskSize ?? imageSize
    guard size <= UInt64(Int64.max) else { throw corrupt("virtual size \(size) is too large") }
    let clusterSize = header.clusterSize
    let clusters = size / clusterSize + (size % clusterSize == 0 ? 0 : 1)
    let l2Entries = clusterSize / header.l2EntrySize
    let needed = clusters / l2Entries + (clusters % l2Entries == 0 ? 0 : 1)
    let bytes = UInt64(snapshot.l1Size) * 8
    guard bytes <= QCOW2Header.maxL1Bytes else {
      throw corrupt("L1 table of \(snapshot.l1Size) entries is larger than 64 MiB")
    }
    guard UInt64(snapshot.l1Size) >= needed else {
      throw corrupt(
        "L1 table of \(snapshot.l1Size) entries is too small for virtual size \(size) (needs \(needed))")
    }
    guard bytes > 0 else { return (size, 0) }
    guard snapshot.l1TableOffset & (clusterSize - 1) == 0, snapshot.l1TableOffset != 0 else {
      throw corrupt("L1 table offset \(hex(snapshot.l1TableOffset)) is not cluster-aligned")
    }
    let (end, overflow) = snapshot.l1TableOffset.addingReportingOverflow(bytes)
    guard !overflow, end <= fileSize else {
      throw corrupt(
        "L1 table at \(hex(snapshot.l1TableOffset)) (\(snapshot.l1Size) entries) lies beyond end of file (size \(hex(fileSize)))"
      )
    }
    return (size, Int(needed))
  }

  /// A value that changes when the table may have changed: a hash of nb_snapshots,
  /// snapshots_offset and the table's bytes, as far as one read of 64 KiB holds them (the whole
  /// table in practice; entries are about 80 bytes). Two small reads, no validation.
  static func generation(of file: ImageFile) throws -> UInt64 {
    let fields = try file.readBytes(at: headerFieldsOffset, count: 12, what: "snapshot header fields")
    var hash = FNV1a()
    hash.add(fields[...])
    let count = fields[0..<4].reduce(0) { $0 << 8 | Int($1) }
    let offset = fields[4..<12].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    guard count > 0, offset <= UInt64(Int64.max) else { return hash.value }
    var window = [UInt8](repeating: 0, count: WindowReader.windowSize)
    let n = try window.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
    // Only the table's own bytes: what follows it may be guest data that changes with writes.
    var end = 0
    for _ in 0..<count {
      guard end + 40 <= n else { break }
      let extra = window[end + 36..<end + 40].reduce(0) { $0 << 8 | Int($1) }
      let idAndName = window[end + 12..<end + 16].reduce(0) { $0 << 8 | Int($1) }
      let length = (40 + min(extra, 1 << 20) + (idAndName >> 16) + (idAndName & 0xFFFF) + 7) & ~7
      end = min(n, end + length)
    }
    hash.add(window[0..<end])
    return hash.value
  }
}

/// FNV-1a, 64 bits: a cheap, stable hash of a few bytes.
struct FNV1a {
  private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

  mutating func add(_ bytes: ArraySlice<UInt8>) {
    for byte in bytes {
      value ^= UInt64(byte)
      value = value &* 0x0100_0000_01B3
    }
  }
}

/// Reads a table front to back through a window (one read per 64 KiB), so that many small
/// entries do not cost one system call each.
struct WindowReader {
  static let windowSize = 64 << 10
  let file: ImageFile
  private var start: UInt64 = 0
  private var window: [UInt8] = []

  init(file: ImageFile) {
    self.file = file
  }

  /// Exactly `count` bytes at `offset`; throws `.corrupt` naming `what` when they run past
  /// end-of-file. `offset + count` must not overflow.
  mutating func bytes(at offset: UInt64, count: Int, what: @autoclosure () -> String) throws -> [UInt8] {
    if offset >= start, offset - start + UInt64(count) <= UInt64(window.count) {
      let from = Int(offset - start)
      return Array(window[from..<from + count])
    }
    guard count <= Self.windowSize else { return try file.readBytes(at: offset, count: count, what: what()) }
    var buffer = [UInt8](repeating: 0, count: Self.windowSize)
    let n = try buffer.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
    guard n >= count else {
      throw VDiskError.corrupt(
        file.path, at: offset, "\(what()) at \(hex(offset)) lies beyond end of file (size \(hex(file.size)))")
    }
    buffer.removeLast(Self.windowSize - n)
    start = offset
    window = buffer
    return Array(window[0..<count])
  }
}
