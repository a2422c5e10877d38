import VDiskCore

/// The engine's write contract (`WritableLayer`), answered by the layer's `QCOW2Writer`; a layer
/// opened read-only refuses with `.readOnly`.
extension QCOW2Layer: WriterBackedLayer {
  public var writeUnit: UInt64 { header.clusterSize }

  public var layerWriter: (any LayerWriter)? { writer }
}

extension QCOW2Writer: LayerWriter {}
