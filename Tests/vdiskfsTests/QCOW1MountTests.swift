import Foundation
import TestSupport
import Testing

/// A qcow version 1 image mounted without `-o ro` falls back to read-only and says why; its
/// disk.raw (over a raw backing file) is what qemu reads.
@Suite struct QCOW1MountTests {
  @Test func mountsReadOnlyWithANotice() throws {
    let scratch = try Scratch("qcow1-mount")
    defer { scratch.remove() }
    let image = try imageOverFilledBase("v1.qcow", format: "qcow", scratch: scratch)
    try Qemu.io(image, format: "qcow", ["write -P 0x3d 1M 100k"])
    let oracle = try Qemu.rawFile(of: image, format: "qcow", scratch: scratch)

    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    defer { mounted.unmount() }
    #expect(mounted.notice.contains("writing qcow (version 1) images is not supported"), "\(mounted.notice)")
    #expect(mounted.notice.contains("mounting read-only"), "\(mounted.notice)")
    #expect(try statFile(mounted.diskRaw).st_mode & 0o222 == 0)
    #expect(try compareFiles(mounted.diskRaw, oracle) == nil)
  }
}
