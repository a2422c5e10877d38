import TestSupport
import Testing
import VDiskCore
import VMDK

@Suite struct VMDKProbeTests {
  @Test func recognizesQemuMadeImages() throws {
    let scratch = try Scratch("probe-vmdk")
    defer { scratch.remove() }
    let image = scratch.file("image.vmdk")
    try Qemu.create(image, format: "vmdk", size: "1M")
    #expect(VMDKDriver.matches(try ProbeBytes(ImageFile.open(image))))
    let other = scratch.file("other.qcow2")
    try Qemu.create(other, size: "1M")
    #expect(!VMDKDriver.matches(try ProbeBytes(ImageFile.open(other))))
  }
}
