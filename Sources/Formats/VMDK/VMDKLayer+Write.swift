import VDiskCore

/// The engine's write contract (`WritableLayer`), answered by the layer's `VMDKWriter`; a layer
/// opened read-only refuses with `.readOnly`.
extension VMDKLayer: WriterBackedLayer {
  public var writeUnit: UInt64 { writer?.writeUnit ?? 4096 }

  public var layerWriter: (any LayerWriter)? { writer }
}
