import VDiskCore

/// The engine's write contract (`WritableLayer`), answered by the layer's `ParallelsWriter`; a
/// layer opened read-only refuses with `.readOnly`.
extension ParallelsLayer: WriterBackedLayer {
  /// One cluster: allocation happens a cluster at a time.
  public var writeUnit: UInt64 { header.clusterSize }

  public var layerWriter: (any LayerWriter)? { writer }
}

extension ParallelsWriter: LayerWriter {}
