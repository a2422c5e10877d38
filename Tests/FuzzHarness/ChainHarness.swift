import ImageFormats
import VDiskCore

extension FuzzHarness {
  /// One input as a two-layer chain (`ChainInput`): a top image of any format over a parent of
  /// any format, both probed as the opener probes them, the parent checked by the child's
  /// expectations of it (`ParentReference.validate`), then walked (the error that refused it, if any). With the input's write flag
  /// the top is opened read-write and `WriteOracle` writes through it; the flushed top is then
  /// opened again over the same parent and must still show what was written.
  @discardableResult
  public static func chain(_ bytes: [UInt8], registry: FormatRegistry = .standard) -> (any Error)? {
    let input = ChainInput(bytes)
    do {
      let topFile = try file(input.top, writable: input.writes, growth: 32 << 20, path: "/nonexistent/top")
      let topPlan = try registry.probe(topFile).plan(
        topFile, context: context(writable: input.writes))
      let cache = MetadataCache(budget: 1 << 20)
      var below: (any ImageLayer)?
      if let reference = topPlan.parent {
        let parentFile = try file(input.parent, path: "/nonexistent/parent")
        let driver = try reference.format.flatMap(registry.driver(named:)) ?? registry.probe(parentFile)
        let parent = try driver.plan(parentFile, context: context()).build(nil, cache)
        try reference.validate?(parent)
        below = parent
      }
      let chain = LayerChain(top: try topPlan.build(below, cache))
      try walk(chain)
      guard input.writes, let memory = topFile.source as? MemorySource else { return nil }

      var oracle = WriteOracle()
      try oracle.run(chain, offsets: input.offsets)
      let written = try file(memory.bytes, path: "/nonexistent/top")
      let again = LayerChain(
        top: try registry.probe(written).plan(written, context: context()).build(
          below, MetadataCache(budget: 1 << 20)))
      try oracle.verifyAll(again, when: "after flush and reopening")
      return nil
    } catch {
      return error
    }
  }
}
