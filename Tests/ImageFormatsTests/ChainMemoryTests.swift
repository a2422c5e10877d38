import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

/// Bounded memory over a whole chain: each format bounds what one layer holds in memory outside
/// the cache; the opener bounds their sum, so 64 layers of the largest cannot add up.
@Suite struct ChainMemoryTests {
  @Test func theChainsResidentMetadataIsBounded() throws {
    let scratch = try Scratch("chainmem")
    defer { scratch.remove() }
    // 512-byte clusters over 8 GiB: an L1 table of 262144 entries (2 MiB) per layer.
    var previous: String?
    for name in ["base", "mid", "top"] {
      let image = scratch.file("\(name).qcow2")
      try Qemu.create(
        image, size: "8G", options: ["cluster_size=512"],
        backing: previous.map { URL(fileURLWithPath: $0).lastPathComponent },
        backingFormat: previous == nil ? nil : "qcow2")
      previous = image
    }
    let top = scratch.file("top.qcow2")
    #expect(try openChain(top).layers.count == 3)
    var options = OpenOptions()
    options.residentMetadataLimit = 5 << 20
    expectVDiskError(
      .unsupported, [top, "metadata held in memory would pass 5 MiB", "base.qcow2", "layer 3"]
    ) {
      _ = try openChain(top, options)
    }
    #expect(ImageOpener.maxResidentMetadata == 512 << 20)
  }
}
