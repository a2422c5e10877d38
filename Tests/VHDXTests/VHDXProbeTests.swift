import TestSupport
import Testing
import VDiskCore
import VHDX

@Suite struct VHDXProbeTests {
  @Test func recognizesQemuMadeImages() throws {
    let scratch = try Scratch("probe-vhdx")
    defer { scratch.remove() }
    let image = scratch.file("image.vhdx")
    try Qemu.create(image, format: "vhdx", size: "1M")
    #expect(VHDXDriver.matches(try ProbeBytes(ImageFile.open(image))))
    let other = scratch.file("other.qcow2")
    try Qemu.create(other, size: "1M")
    #expect(!VHDXDriver.matches(try ProbeBytes(ImageFile.open(other))))
  }
}
