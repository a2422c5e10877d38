/// What one file of the mounted tree shows: a whole chain (`disk.raw`), a snapshot's chain, or a
/// byte range of another view (a partition). The FUSE tree reads, writes and seeks through this.
public protocol ByteView: AnyObject, Sendable {
  var size: UInt64 { get }
  /// Reads at `offset`; short only at the end of the view.
  func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int
  func write(_ data: UnsafeRawBufferPointer, at offset: UInt64) throws -> Int
  func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws
  func flush() throws
  func resize(to newSize: UInt64, allowShrink: Bool) throws
  /// SEEK_DATA; nil = no data at or after `offset` (ENXIO).
  func seekData(from offset: UInt64) throws -> UInt64?
  /// SEEK_HOLE; the end counts as a hole; nil when `offset` is past the end (ENXIO).
  func seekHole(from offset: UInt64) throws -> UInt64?
  /// Bytes held as data (st_blocks).
  func allocatedBytes() throws -> UInt64
  /// Where the `count` bytes at `offset` (clamped to the view) are, for zero-copy replies; nil
  /// when they must be read through `read(into:at:)` (see `LayerChain.readPieces`).
  func readPieces(at offset: UInt64, count: Int, maxPieces: Int) throws -> [ReadPiece]?
}

extension ByteView {
  public func readPieces(at offset: UInt64, count: Int, maxPieces: Int) throws -> [ReadPiece]? { nil }
}

extension LayerChain: ByteView {
  public var size: UInt64 { virtualSize }
}

/// `length` bytes of `parent` from `offset` (a partition of a disk): reads, writes, zeroing and
/// seeking are clipped to the range and shifted into it. Its size is fixed.
public final class SliceView: ByteView {
  public let parent: any ByteView
  public let offset: UInt64
  public let size: UInt64

  /// The range is clipped to the parent's current size.
  public init(parent: any ByteView, offset: UInt64, length: UInt64) {
    self.parent = parent
    self.offset = min(offset, parent.size)
    self.size = min(length, parent.size - self.offset)
  }

  public func read(into buffer: UnsafeMutableRawBufferPointer, at position: UInt64) throws -> Int {
    guard position < size, buffer.count > 0 else { return 0 }
    let n = Int(min(UInt64(buffer.count), size - position))
    return try parent.read(
      into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]), at: offset + position)
  }

  public func readPieces(at position: UInt64, count: Int, maxPieces: Int) throws -> [ReadPiece]? {
    guard position < size, count > 0 else { return [] }
    let n = Int(min(UInt64(count), size - position))
    return try parent.readPieces(at: offset + position, count: n, maxPieces: maxPieces)
  }

  public func write(_ data: UnsafeRawBufferPointer, at position: UInt64) throws -> Int {
    let (end, overflow) = position.addingReportingOverflow(UInt64(data.count))
    guard !overflow, end <= size else {
      throw VDiskError(
        .noSpace, path: "partition", offset: position,
        "write of \(data.count) bytes at \(hex(position)) reaches past the end of the partition (size \(hex(size)))"
      )
    }
    return try parent.write(data, at: offset + position)
  }

  public func discard(at position: UInt64, length: UInt64, mode: DiscardMode) throws {
    guard position < size else { return }
    try parent.discard(at: offset + position, length: min(length, size - position), mode: mode)
  }

  public func flush() throws { try parent.flush() }

  public func resize(to newSize: UInt64, allowShrink: Bool) throws {
    throw VDiskError(
      .invalidArgument, path: "partition", "a partition's size is fixed by the partition table")
  }

  public func seekData(from position: UInt64) throws -> UInt64? {
    guard position < size, let found = try parent.seekData(from: offset + position), found < offset + size
    else {
      return nil
    }
    return found - offset
  }

  public func seekHole(from position: UInt64) throws -> UInt64? {
    guard position < size else { return nil }
    let found = try parent.seekHole(from: offset + position) ?? (offset + size)
    return min(found, offset + size) - offset
  }

  public func allocatedBytes() throws -> UInt64 {
    var total: UInt64 = 0
    var position: UInt64 = 0
    while position < size, let data = try seekData(from: position) {
      let hole = try seekHole(from: data) ?? size
      total += hole - data
      position = hole
    }
    return total
  }
}
