import VDiskCore

/// The VHDX file as it reads after log replay, without changing it: replayed 4 KiB sectors and
/// zeroed ranges kept in memory and consulted before the file (vhdx-notes, "Replay": "A read-only
/// FUSE reader could instead replay into an in-memory overlay"). With an empty log it is the file.
///
/// Region tables, metadata and BAT pages are read through it, and so are payload runs that the
/// overlay touches (see `VHDXLayer.extent`). Bytes past the end of the file but within the size
/// the log says the file has (LastFileOffset) read as zeros.
struct ReplayedFile: Sendable {
  static let sectorSize: UInt64 = 4096

  let file: ImageFile
  /// Replayed sectors by 4 KiB-aligned file offset.
  let sectors: [UInt64: [UInt8]]
  /// `sectors`' keys in ascending order, for range queries.
  let sortedSectors: [UInt64]
  /// Zeroed ranges, sorted and disjoint; a replayed sector inside one wins over it.
  let zeroRanges: [Range<UInt64>]
  /// The size the log says the file has (LastFileOffset, rounded); see `size`.
  let replayedSize: UInt64
  /// The file's size after replay: at least its real size, which grows while a writer allocates.
  var size: UInt64 { max(replayedSize, file.size) }

  init(file: ImageFile) {
    self.init(file: file, sectors: [:], zeroRanges: [], size: file.size)
  }

  init(file: ImageFile, sectors: [UInt64: [UInt8]], zeroRanges: [Range<UInt64>], size: UInt64) {
    self.file = file
    self.sectors = sectors
    sortedSectors = sectors.keys.sorted()
    self.zeroRanges = zeroRanges.sorted { $0.lowerBound < $1.lowerBound }
    replayedSize = size
  }

  var isReplayed: Bool { !sectors.isEmpty || !zeroRanges.isEmpty }

  /// Whether any replayed sector or zeroed range meets `range`.
  func touches(_ range: Range<UInt64>) -> Bool {
    firstTouched(in: range) != nil
  }

  /// The first offset of `range` that the overlay changes, or nil.
  func firstTouched(in range: Range<UInt64>) -> UInt64? {
    guard isReplayed, !range.isEmpty else { return nil }
    var best: UInt64?
    // The first replayed sector ending after range.lowerBound.
    let start = range.lowerBound & ~(Self.sectorSize - 1)
    let i = lowerBound(sortedSectors, start)
    if i < sortedSectors.count, sortedSectors[i] < range.upperBound {
      best = max(sortedSectors[i], range.lowerBound)
    }
    for zero in zeroRanges where zero.overlaps(range) {
      let first = max(zero.lowerBound, range.lowerBound)
      best = min(best ?? first, first)
      break
    }
    return best
  }

  /// Reads `buffer.count` bytes at `offset`: file bytes (zeros past its end), then zeroed ranges,
  /// then replayed sectors on top.
  func readFillingZeros(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
    try file.readFillingZeros(into: buffer, at: offset)
    guard isReplayed, buffer.count > 0 else { return }
    let (end, overflow) = offset.addingReportingOverflow(UInt64(buffer.count))
    guard !overflow else { return }
    for zero in zeroRanges where zero.overlaps(offset..<end) {
      let from = Int(max(zero.lowerBound, offset) - offset)
      let to = Int(min(zero.upperBound, end) - offset)
      UnsafeMutableRawBufferPointer(rebasing: buffer[from..<to]).initializeMemory(
        as: UInt8.self, repeating: 0)
    }
    var i = lowerBound(sortedSectors, offset & ~(Self.sectorSize - 1))
    while i < sortedSectors.count, sortedSectors[i] < end {
      let sectorStart = sortedSectors[i]
      if let bytes = sectors[sectorStart] {
        let from = max(sectorStart, offset)
        let to = min(sectorStart + Self.sectorSize, end)
        if from < to {
          bytes.withUnsafeBytes { src in
            let s = UnsafeRawBufferPointer(rebasing: src[Int(from - sectorStart)..<Int(to - sectorStart)])
            UnsafeMutableRawBufferPointer(rebasing: buffer[Int(from - offset)..<Int(to - offset)])
              .copyMemory(from: s)
          }
        }
      }
      i += 1
    }
  }

  /// Exactly `count` bytes at `offset`, which must lie within the replayed size; else `.corrupt`
  /// naming `what`.
  func readBytes(at offset: UInt64, count: Int, what: @autoclosure () -> String) throws -> [UInt8] {
    let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
    guard !overflow, end <= size else {
      throw VDiskError.corrupt(
        file.path, at: offset, "\(what()) at \(hex(offset)) lies beyond end of file (size \(hex(size)))")
    }
    return try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
      try readFillingZeros(into: UnsafeMutableRawBufferPointer(buffer), at: offset)
      initialized = count
    }
  }
}

/// Index of the first element of sorted `values` that is >= `value`.
func lowerBound(_ values: [UInt64], _ value: UInt64) -> Int {
  var low = 0
  var high = values.count
  while low < high {
    let mid = (low + high) / 2
    if values[mid] < value { low = mid + 1 } else { high = mid }
  }
  return low
}
