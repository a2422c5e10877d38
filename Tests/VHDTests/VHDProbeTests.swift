import TestSupport
import Testing
import VDiskCore
import VHD

@Suite struct VHDProbeTests {
  @Test func recognizesQemuMadeImages() throws {
    let scratch = try Scratch("probe-vpc")
    defer { scratch.remove() }
    let image = scratch.file("image.vpc")
    try Qemu.create(image, format: "vpc", size: "1M")
    #expect(VHDDriver.matches(try ProbeBytes(ImageFile.open(image))))
    let other = scratch.file("other.qcow2")
    try Qemu.create(other, size: "1M")
    #expect(!VHDDriver.matches(try ProbeBytes(ImageFile.open(other))))
  }
}
