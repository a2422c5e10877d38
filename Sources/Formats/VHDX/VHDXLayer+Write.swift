import VDiskCore

/// The engine's write contract (`WritableLayer`), answered by the layer's `VHDXWriter`; a layer
/// opened read-only refuses with `.readOnly`.
extension VHDXLayer: WriterBackedLayer {
  public var writeUnit: UInt64 { bat.blockSize }

  public var layerWriter: (any LayerWriter)? { writer }
}

extension VHDXWriter: LayerWriter {
  /// Writes the metadata back through the log and syncs.
  func flush() throws { try writeBack() }

  func resize(to newSize: UInt64, allowShrink: Bool) throws { try resize(to: newSize) }
}
