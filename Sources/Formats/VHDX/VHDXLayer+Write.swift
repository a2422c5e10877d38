import VDiskCore

/// The engine's write contract (`WritableLayer`), answered by the layer's `VHDXWriter`; a layer
/// opened read-only refuses with `.readOnly`.
extension VHDXLayer: WritableLayer {
  private func requireWriter() throws -> VHDXWriter {
    guard let writer else { throw VDiskError(.readOnly, path: file.path, "the image is open read-only") }
    return writer
  }

  public var writeUnit: UInt64 { bat.blockSize }

  /// Never used on a read-only layer (the engine refuses writes there first).
  public var writeLocks: RangeLocks { writer?.locks ?? RangeLocks() }

  public func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    try requireWriter().prepareWrite(at: offset, length: length)
  }

  public func commitWrite(_ prepared: PreparedWrite) throws {
    try requireWriter().commitWrite(prepared)
  }

  public func abortWrite(_ prepared: PreparedWrite) {
    writer?.abortWrite(prepared)
  }

  public func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>] {
    try requireWriter().discard(at: offset, length: length, mode: mode)
  }

  public func flush() throws {
    try requireWriter().writeBack()
  }

  public func resize(to newSize: UInt64, allowShrink: Bool) throws {
    try requireWriter().resize(to: newSize)
  }
}
