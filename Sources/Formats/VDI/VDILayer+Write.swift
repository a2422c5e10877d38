import VDiskCore

/// The engine's write contract (`WritableLayer`), answered by the layer's `VDIWriter`; a layer
/// opened read-only refuses with `.readOnly`.
extension VDILayer: WriterBackedLayer {
  /// One block: allocation happens a block at a time.
  public var writeUnit: UInt64 { UInt64(header.blockSize) }

  public var layerWriter: (any LayerWriter)? { writer }
}

extension VDIWriter: LayerWriter {}
