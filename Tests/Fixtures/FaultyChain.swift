import VDiskCore

/// An image opened over a `FaultInjectingSource`, built from its format's plan (no opener, no
/// image locks), so that a test can fail or cut its I/O. A parent, when named, is opened
/// read-only with the same driver and shares the cache.
public struct FaultyChain {
  public let chain: LayerChain
  public let source: FaultInjectingSource

  /// Opens `image` with `format`; with `crashAfter`, the source crashes after that many stages,
  /// counting those of opening.
  public init(
    _ image: String, format: any FormatDriver.Type, writable: Bool = true, parent: String? = nil,
    cacheBudget: Int = 32 << 20, crashAfter: Int? = nil
  ) throws {
    let source = FaultInjectingSource(wrapping: try FileDescriptorSource.open(image, writable: writable))
    if let crashAfter { source.crash(afterStage: crashAfter) }
    try self.init(
      image, source: source, format: format, writable: writable, parent: parent, cacheBudget: cacheBudget)
  }

  /// Opens `image` with `format` over `source` (a `FaultInjectingSource` over `image` the
  /// caller made and armed, so that it can count the stages even when opening fails).
  public init(
    _ image: String, source: FaultInjectingSource, format: any FormatDriver.Type, writable: Bool = true,
    parent: String? = nil, cacheBudget: Int = 32 << 20
  ) throws {
    self.source = source
    let cache = MetadataCache(budget: cacheBudget)
    var below: (any ImageLayer)?
    if let parent {
      let file = try ImageFile.open(parent)
      below = try format.plan(file, context: PlanContext(logger: logger)).build(nil, cache)
    }
    let file = try ImageFile(source: source, path: image, isWritable: writable)
    let plan = try format.plan(file, context: PlanContext(logger: logger, writable: writable))
    chain = LayerChain(top: try plan.build(below, cache))
  }

  /// Where guest `offset` lives in the image file; nil when it is not stored there as data.
  public func hostOffset(of offset: UInt64) throws -> UInt64? {
    guard case .data(let host) = try chain.top.extent(at: offset, maxLength: 1).mapping else { return nil }
    return host
  }
}
