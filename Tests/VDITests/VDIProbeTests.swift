import TestSupport
import Testing
import VDI
import VDiskCore

@Suite struct VDIProbeTests {
  @Test func recognizesQemuMadeImages() throws {
    let scratch = try Scratch("probe-vdi")
    defer { scratch.remove() }
    let image = scratch.file("image.vdi")
    try Qemu.create(image, format: "vdi", size: "1M")
    #expect(VDIDriver.matches(try ProbeBytes(ImageFile.open(image))))
    let other = scratch.file("other.qcow2")
    try Qemu.create(other, size: "1M")
    #expect(!VDIDriver.matches(try ProbeBytes(ImageFile.open(other))))
  }
}
