import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// A raw image: guest bytes are the file's bytes. Holes in a sparse file are reported as zeros by
/// `allocationExtent` (SEEK_DATA/SEEK_HOLE); reads simply read the file.
public final class RawLayer: ImageLayer {
  public let file: ImageFile
  /// The engine's range locks for writes (unused on a read-only file).
  public let writeLocks = RangeLocks()
  /// Set when the format was probed, not stated: the formats a write must not make the file
  /// probe as (see `vet`). nil when the user said `--format raw`.
  public let probedBy: FormatRegistry?
  /// Held while a write that touches the bytes probing reads is judged and lands, so that two
  /// writes judged harmless one by one cannot together make a magic number.
  private let probeWindow = Mutex(())
  public var formatName: String { "raw" }
  public var backing: (any ImageLayer)? { nil }
  public var virtualSize: UInt64 { file.size }

  public init(file: ImageFile, probedBy: FormatRegistry? = nil) {
    self.file = file
    self.probedBy = probedBy
  }

  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    Extent(offset: offset, length: maxLength, mapping: .data(hostOffset: offset), file: file)
  }

  /// Asks the file system where data and holes are (SEEK_DATA/SEEK_HOLE); all data when it
  /// cannot tell (no descriptor, no support).
  public func allocationExtent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    switch file.allocation(at: offset) {
    case .hole(let end):
      return Extent(offset: offset, length: min(maxLength, end - offset), mapping: .zero, file: file)
    case .data(let end):
      return Extent(
        offset: offset, length: min(maxLength, end - offset), mapping: .data(hostOffset: offset), file: file)
    case nil:
      return try extent(at: offset, maxLength: maxLength)
    }
  }

  public var info: ImageInfo {
    ImageInfo(format: "raw", filename: file.path, virtualSize: virtualSize)
  }

  /// The file itself: its size is the disk's (a write past the end grows both alike). Not for
  /// writing when the format was probed: every write must pass `vet`, which the kernel's
  /// passthrough writes would skip.
  public func passthroughFile(writable: Bool) -> ImageFile? {
    guard file.descriptor != nil, !writable || probedBy == nil else { return nil }
    return file
  }
}

/// A raw file written in place: guest offset = host offset. Discard writes zeros (punching holes
/// would need fallocate, which the Swift Glibc module does not export).
extension RawLayer: WritableLayer {
  /// Nothing is allocated: writes of different bytes never conflict.
  public var writeUnit: UInt64 { 1 }

  public func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    PreparedWrite(targets: [WriteTarget(file: file, hostOffset: offset, guest: offset..<offset + length)])
  }

  public func commitWrite(_ prepared: PreparedWrite) throws {}

  public func abortWrite(_ prepared: PreparedWrite) {}

  public func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>] {
    [offset..<offset + length]
  }

  public func flush() throws {
    try file.dataSync()
  }

  public func resize(to newSize: UInt64, allowShrink: Bool) throws {
    guard newSize >= virtualSize || allowShrink else {
      throw VDiskError(.invalidArgument, path: file.path, "shrinking needs -o allow_shrink")
    }
    if let registry = probedBy {
      // The last sector moves with the size (a fixed VHD's footer is found there).
      let tailStart = ProbeBytes.tailStart(ofFileSized: newSize)
      let next = ProbeBytes(
        head: try currentBytes(0..<min(newSize, UInt64(ProbeBytes.headLength))),
        tail: try currentBytes(tailStart..<newSize))
      try refuse(next, registry: registry, offset: newSize, "a resize to \(newSize) bytes")
    }
    try file.setSize(newSize)
  }

  /// QEMU's rule for a raw image whose format was probed (block/raw-format.c): a guest write must
  /// not make the file probe as another format next time, or a guest could turn its disk into a
  /// qcow2 naming any host file as its backing file. A write that touches what probing reads
  /// (the first `ProbeBytes.headLength` bytes and the last `ProbeBytes.tailLength`) is judged on
  /// the bytes as they would be after it (current bytes merged with the new ones), by the
  /// registry's own probe, so a new format is covered without an edit; a match other than raw is
  /// refused with `.notPermitted` (EPERM). Discards come here as writes of zeros.
  public func vet(_ bytes: UnsafeRawBufferPointer, at offset: UInt64, land: () throws -> Void) throws {
    guard let registry = probedBy, !bytes.isEmpty else { return try land() }
    let size = file.size
    let end = offset + UInt64(bytes.count)
    let headEnd = min(size, UInt64(ProbeBytes.headLength))
    let tailStart = ProbeBytes.tailStart(ofFileSized: size)
    guard offset < headEnd || end > tailStart else { return try land() }
    try probeWindow.withLock { _ in
      var head = try currentBytes(0..<headEnd)
      var tail = try currentBytes(tailStart..<size)
      Self.merge(bytes, at: offset, into: &head, startingAt: 0)
      Self.merge(bytes, at: offset, into: &tail, startingAt: tailStart)
      try refuse(
        ProbeBytes(head: head, tail: tail), registry: registry, offset: offset,
        "a write of \(bytes.count) bytes at \(hex(offset))")
      try land()
    }
  }

  /// Throws when `next` would probe as a format other than raw.
  private func refuse(_ next: ProbeBytes, registry: FormatRegistry, offset: UInt64, _ what: String) throws {
    guard let found = registry.recognize(next), found.name != RawDriver.name else { return }
    throw VDiskError(
      .notPermitted, path: file.path, offset: offset,
      "\(what) would make this raw image probe as \(found.name); refused because its format was probed, not stated (open it with --format raw or -o format=raw to allow such writes)"
    )
  }

  /// The file's bytes in `range`, zeros past its end.
  private func currentBytes(_ range: Range<UInt64>) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: Int(range.count))
    _ = try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: range.lowerBound) }
    return bytes
  }

  /// Copies the part of `bytes` (at file offset `offset`) that overlaps `window` (at file offset
  /// `start`) into it.
  static func merge(
    _ bytes: UnsafeRawBufferPointer, at offset: UInt64, into window: inout [UInt8], startingAt start: UInt64
  ) {
    let lower = max(offset, start)
    let upper = min(offset + UInt64(bytes.count), start + UInt64(window.count))
    guard lower < upper else { return }
    for position in lower..<upper {
      window[Int(position - start)] = bytes[Int(position - offset)]
    }
  }
}
