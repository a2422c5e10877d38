import VDiskCore

/// The engine's write contract (`WritableLayer`), answered by the layer's `VHDWriter`; a layer
/// opened read-only refuses with `.readOnly`.
extension VHDLayer: WriterBackedLayer {
  public var writeUnit: UInt64 { table?.blockSize ?? 512 }

  public var layerWriter: (any LayerWriter)? { writer }
}

extension VHDWriter: LayerWriter {}
