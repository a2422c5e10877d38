import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VHD

/// A differencing VHD as an untrusted image: opened alone (`-o nobacking`, `info` of the top),
/// what it does not hold reads as zeros; a parent name that is not a path is refused.
@Suite struct VHDUntrustedTests {
  @Test func aDifferencingDiskOpensWithoutItsParent() throws {
    let scratch = try Scratch("vpc-alone")
    defer { scratch.remove() }
    let (child, _, expected) = try VHDDifferencingTests.makePair(in: scratch)
    let chain = try openChain(child, OpenOptions(openBacking: false))
    #expect(chain.layers.count == 1)
    let all = try readAll(chain)
    let held = VHDDifferencingTests.childSectors
    for sector in 0..<Int(VHDDifferencingTests.size / 512) {
      let range = sector * 512..<(sector + 1) * 512
      let want = held.contains(sector) ? expected[range] : [UInt8](repeating: 0, count: 512)[...]
      guard all[range] == want else {
        Issue.record("sector \(sector) reads wrong without the parent")
        return
      }
    }
    #expect(chain.top.info.backingFilename == "parent.vhd")
  }

  @Test func aParentNameWithAProtocolIsRefused() throws {
    let scratch = try Scratch("vpc-alone")
    defer { scratch.remove() }
    // The parent's name as the header records it (what the opener reports and checks).
    let (child, _, _) = try VHDDifferencingTests.makePair(in: scratch, parentName: "nbd://host/parent.vhd")
    expectVDiskError(.unsupported, [child, "protocol prefix \"nbd:\""]) { _ = try openChain(child) }
  }
}
