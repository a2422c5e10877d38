/// The guest view of a chain of layers: the one place that reads guest bytes, walks backing
/// layers, zero-fills, and answers allocation questions (SEEK_DATA/SEEK_HOLE, st_blocks, maps).
///
/// Reads ask the top layer for extents and act on each: `.data` is one positional read of the
/// whole host-contiguous run, `.zero` is a memset, `.compressed` goes to the layer's decoder,
/// `.unallocated` is read from the backing layer, and bytes past the bottom of the chain or past
/// the end of a backing layer smaller than its child read as zeros.
public final class LayerChain: Sendable {
  public let top: any ImageLayer

  public init(top: any ImageLayer) {
    self.top = top
  }

  public var virtualSize: UInt64 { top.virtualSize }

  /// Every layer from the top down.
  public var layers: [any ImageLayer] { top.chain }

  /// Reads guest bytes at `offset` into `buffer`; returns the number read, which is short only
  /// at the end of the virtual disk.
  public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
    guard offset < virtualSize, buffer.count > 0 else { return 0 }
    let n = Int(min(UInt64(buffer.count), virtualSize - offset))
    try Self.read(layer: top, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]), at: offset)
    return n
  }

  /// Reads `count` guest bytes at `offset` into a new array (short at the end of the disk).
  public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    let n = try bytes.withUnsafeMutableBytes { try read(into: $0, at: offset) }
    bytes.removeLast(count - n)
    return bytes
  }

  private static func read(
    layer: any ImageLayer, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64
  )
    throws
  {
    var done = 0
    while done < buffer.count {
      let position = offset + UInt64(done)
      let rest = UnsafeMutableRawBufferPointer(rebasing: buffer[done...])
      guard position < layer.virtualSize else {
        // A backing layer smaller than its child: the rest reads as zeros.
        rest.initializeMemory(as: UInt8.self, repeating: 0)
        return
      }
      let limit = min(UInt64(rest.count), layer.virtualSize - position)
      let extent = try checked(
        layer.extent(at: position, maxLength: limit), layer: layer, at: position, limit)
      let run = UnsafeMutableRawBufferPointer(rebasing: rest[0..<Int(extent.length)])
      switch extent.mapping {
      case .data(let hostOffset):
        try extent.file.readFillingZeros(into: run, at: hostOffset)
      case .zero:
        run.initializeMemory(as: UInt8.self, repeating: 0)
      case .unallocated:
        if let backing = layer.backing {
          try read(layer: backing, into: run, at: position)
        } else {
          run.initializeMemory(as: UInt8.self, repeating: 0)
        }
      case .compressed(let descriptor):
        guard position >= descriptor.guestOffset,
          position - descriptor.guestOffset + extent.length <= UInt64(descriptor.decompressedLength)
        else {
          throw VDiskError.corrupt(
            layer.file.path, at: position, "compressed extent at guest \(hex(position)) lies outside its unit"
          )
        }
        try layer.decode(descriptor, into: run, skipping: Int(position - descriptor.guestOffset))
      }
      done += Int(extent.length)
    }
  }

  /// Guards the engine against a driver that breaks the extent contract (an endless loop on a
  /// zero-length answer, or an overrun).
  @inline(__always)
  static func checked(_ extent: Extent, layer: any ImageLayer, at position: UInt64, _ limit: UInt64) throws
    -> Extent
  {
    guard extent.offset == position, extent.length > 0, extent.length <= limit else {
      throw VDiskError.corrupt(
        layer.file.path, at: position,
        "\(layer.formatName) driver returned an invalid extent (\(hex(extent.offset)), length \(extent.length)) for \(hex(position))"
      )
    }
    return extent
  }
}

/// What the chain as a whole holds for a run of guest bytes.
public struct ChainExtent: Sendable, Equatable {
  public enum Kind: Sendable, Equatable {
    /// Bytes stored in layer `depth` (raw or compressed).
    case data
    /// Reads as zeros because layer `depth` says so (zero cluster, sparse hole).
    case zero
    /// No layer holds it (or it lies past the end of a smaller backing layer): reads as zeros.
    case unallocated
  }

  public var offset: UInt64
  public var length: UInt64
  public var kind: Kind
  /// Index in the chain of the layer that answered (0 = top); for `.unallocated`, the depth
  /// where the walk ended.
  public var depth: Int
  /// Host offset of the run in its layer's file for uncompressed data.
  public var hostOffset: UInt64?
  public var compressed: Bool
  /// Path of the file that holds `.data`.
  public var filePath: String?

  /// Whether SEEK_DATA counts these bytes as data.
  public var isData: Bool { kind == .data }
}

extension LayerChain {
  /// The chain-wide status of the run starting at `offset` (at most `maxLength` bytes); throws
  /// `.invalidArgument` for a range outside the disk.
  public func status(at offset: UInt64, maxLength: UInt64) throws -> ChainExtent {
    guard offset < virtualSize, maxLength > 0 else {
      throw VDiskError(
        .invalidArgument, path: top.file.path, offset: offset,
        "status asked for \(hex(offset)) (length \(maxLength)) outside the disk (size \(hex(virtualSize)))")
    }
    return try Self.status(layer: top, depth: 0, at: offset, maxLength: min(maxLength, virtualSize - offset))
  }

  private static func status(layer: any ImageLayer, depth: Int, at offset: UInt64, maxLength: UInt64) throws
    -> ChainExtent
  {
    guard offset < layer.virtualSize else {
      return ChainExtent(
        offset: offset, length: maxLength, kind: .unallocated, depth: depth, hostOffset: nil,
        compressed: false,
        filePath: nil)
    }
    let limit = min(maxLength, layer.virtualSize - offset)
    let e = try checked(layer.allocationExtent(at: offset, maxLength: limit), layer: layer, at: offset, limit)
    switch e.mapping {
    case .data(let host):
      return ChainExtent(
        offset: offset, length: e.length, kind: .data, depth: depth, hostOffset: host, compressed: false,
        filePath: e.file.path)
    case .compressed:
      return ChainExtent(
        offset: offset, length: e.length, kind: .data, depth: depth, hostOffset: nil, compressed: true,
        filePath: e.file.path)
    case .zero:
      return ChainExtent(
        offset: offset, length: e.length, kind: .zero, depth: depth, hostOffset: nil, compressed: false,
        filePath: nil)
    case .unallocated:
      guard let backing = layer.backing else {
        return ChainExtent(
          offset: offset, length: e.length, kind: .unallocated, depth: depth, hostOffset: nil,
          compressed: false,
          filePath: nil)
      }
      return try status(layer: backing, depth: depth + 1, at: offset, maxLength: e.length)
    }
  }

  /// SEEK_DATA: the first offset at or after `offset` that holds data, or nil when none does
  /// (ENXIO).
  public func seekData(from offset: UInt64) throws -> UInt64? {
    var position = offset
    while position < virtualSize {
      let s = try status(at: position, maxLength: virtualSize - position)
      if s.isData { return position }
      position += s.length
    }
    return nil
  }

  /// SEEK_HOLE: the first offset at or after `offset` that is a hole; the end of the disk counts
  /// as a hole. nil when `offset` is past the end (ENXIO).
  public func seekHole(from offset: UInt64) throws -> UInt64? {
    guard offset < virtualSize else { return nil }
    var position = offset
    while position < virtualSize {
      let s = try status(at: position, maxLength: virtualSize - position)
      if !s.isData { return position }
      position += s.length
    }
    return virtualSize
  }

  /// Guest bytes held as data anywhere in the chain (what `st_blocks` reports).
  public func allocatedBytes() throws -> UInt64 {
    var total: UInt64 = 0
    try forEachStatus { if $0.isData { total += $0.length } }
    return total
  }

  /// Calls `body` for consecutive chain extents covering the whole disk, merging neighbours that
  /// report the same thing.
  public func forEachStatus(_ body: (ChainExtent) throws -> Void) throws {
    var position: UInt64 = 0
    var pending: ChainExtent?
    while position < virtualSize {
      let s = try status(at: position, maxLength: virtualSize - position)
      position += s.length
      if var p = pending, p.kind == s.kind, p.depth == s.depth, p.compressed == s.compressed,
        p.filePath == s.filePath,
        p.hostOffset.map({ $0 + p.length }) == s.hostOffset
      {
        p.length += s.length
        pending = p
        continue
      }
      if let p = pending { try body(p) }
      pending = s
    }
    if let p = pending { try body(p) }
  }
}
