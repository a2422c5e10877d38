/// A format's write side: the object a layer opened read-write owns, which plans and links
/// writes (`WritableLayer`'s contract, less `writeUnit`). Writer classes stay internal to their
/// format; the layer hands its writer out as `any LayerWriter`.
public protocol LayerWriter: AnyObject, Sendable {
  /// The engine's range locks over this layer's units.
  var locks: RangeLocks { get }
  func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite
  func commitWrite(_ prepared: PreparedWrite) throws
  func abortWrite(_ prepared: PreparedWrite)
  func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>]
  func flush() throws
  func resize(to newSize: UInt64, allowShrink: Bool) throws
}

/// A writable layer that answers the engine through its writer: every `WritableLayer` call but
/// `writeUnit` goes to `layerWriter`, and a layer opened read-only (no writer) refuses with
/// `.readOnly`. A format conforms with its write unit and one property.
public protocol WriterBackedLayer: WritableLayer {
  /// The write side; nil when the layer was opened read-only.
  var layerWriter: (any LayerWriter)? { get }
}

extension WriterBackedLayer {
  private func requireWriter() throws -> any LayerWriter {
    guard let layerWriter else { throw VDiskError(.readOnly, path: file.path, "the image is open read-only") }
    return layerWriter
  }

  /// Never used on a read-only layer (the engine refuses writes there first).
  public var writeLocks: RangeLocks { layerWriter?.locks ?? RangeLocks() }

  public func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    try requireWriter().prepareWrite(at: offset, length: length)
  }

  public func commitWrite(_ prepared: PreparedWrite) throws {
    try requireWriter().commitWrite(prepared)
  }

  public func abortWrite(_ prepared: PreparedWrite) {
    layerWriter?.abortWrite(prepared)
  }

  public func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>] {
    try requireWriter().discard(at: offset, length: length, mode: mode)
  }

  public func flush() throws {
    try requireWriter().flush()
  }

  public func resize(to newSize: UInt64, allowShrink: Bool) throws {
    try requireWriter().resize(to: newSize, allowShrink: allowShrink)
  }
}
