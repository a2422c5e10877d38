import ImageFormats
import VDiskCore

extension FuzzHarness {
  /// One input as a VMDK text descriptor and the extent files it names: the first two bytes
  /// (little-endian, modulo what follows) are the descriptor's length, the descriptor follows,
  /// and every extent file it names, whatever its name, holds the rest of the input (served from
  /// memory through `PlanContext.openFile`). So flat, sparse, VMFS and COWD extents are laid out
  /// by the descriptor, each over bytes the fuzzer controls; then the disk is walked.
  @discardableResult
  public static func descriptor(_ bytes: [UInt8], registry: FormatRegistry = .standard) -> (any Error)? {
    guard bytes.count >= 2, let vmdk = registry.driver(named: "vmdk") else { return nil }
    let body = bytes[2...]
    let length = Int(UInt64(bytes[0]) | UInt64(bytes[1]) << 8) % (body.count + 1)
    let extents = Array(body.dropFirst(length))
    do {
      let file = try file(Array(body.prefix(length)), path: "/nonexistent/disk.vmdk")
      let context = PlanContext(logger: logger) { path, _ in
        try FuzzHarness.file(extents, path: path.hasPrefix("/nonexistent/") ? path : "/nonexistent/extent")
      }
      let chain = LayerChain(
        top: try vmdk.plan(file, context: context).build(nil, MetadataCache(budget: 1 << 20)))
      try walk(chain)
      return nil
    } catch {
      return error
    }
  }
}
