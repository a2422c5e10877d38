import Foundation
import TestSupport
import Testing

/// A QED mounted read-write through the real binary: the shared scripted run
/// (`WriteMountRuns.scripted`: writes through disk.raw, into a backing file's range too, an fsync,
/// a punched hole and the unmount leave an image `qemu-img check` finds clean and whose content is
/// what was written), with copy-on-write from the backing file, and need-check cleared.
@Suite struct QEDWriteMountTests {
  @Test func mountsReadWriteAndWrites() throws {
    let scratch = try Scratch("qed-mount")
    defer { scratch.remove() }
    let image = try imageOverFilledBase("d.qed", format: "qed", scratch: scratch)
    try Qemu.io(image, format: "qed", ["write -P 0x3d 0 1M"])
    try WriteMountRuns.scripted(image: image, format: "qed", scratch: scratch) { disk throws in
      // Copy-on-write from the backing file around the small write.
      #expect(try disk.read(at: (7 << 20) - 4096, count: 4095) == [UInt8](repeating: 0x2c, count: 4095))
    }
    let header = try Data(contentsOf: URL(fileURLWithPath: image)).prefix(24)
    #expect(header[16] & 2 == 0, "need-check left set after the unmount")
  }
}
