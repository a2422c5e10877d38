import Foundation
import ImageFormats
import QCOW1
import QCOW2
import QED
import TestSupport
import Testing
import VDI
import VDiskCore
import VHD
import VHDX
import VMDK

/// The format registry is the one list the opener and the CLI read.
@Suite struct RegistryTests {
  @Test func probeOrderIsAsDocumented() {
    let registry = FormatRegistry.standard
    #expect(
      registry.names == [
        "qcow2", "vmdk", "vhdx", "vpc", "vdi", "qed", "qcow", "parallels", "cloop", "bochs", "dmg", "raw",
      ])
    #expect(registry.drivers.last == RawDriver.self)
    #expect(
      registry.namesText == "qcow2, vmdk, vhdx, vpc, vdi, qed, qcow, parallels, cloop, bochs, dmg or raw")
    // Only the last resort matches a file without any magic.
    let blank = ProbeBytes(head: [UInt8](repeating: 0, count: 4096), tail: [UInt8](repeating: 0, count: 512))
    #expect(registry.drivers.filter { $0.matches(blank) }.map { $0.name } == ["raw"])
    #expect(Set(registry.names).count == registry.names.count)
    for driver in registry.drivers {
      #expect(driver.name == driver.name.lowercased())
      #expect(!driver.summary.isEmpty)
      #expect(registry.helpText.contains(driver.summary))
    }
  }

  @Test func namesResolveCaseInsensitively() {
    let registry = FormatRegistry.standard
    #expect(registry.driver(named: "QCOW2") == QCOW2Driver.self)
    #expect(registry.driver(named: "vpc") == VHDDriver.self)
    #expect(registry.driver(named: "vhdx") == VHDXDriver.self)
    #expect(registry.driver(named: "vmdk") == VMDKDriver.self)
    #expect(registry.driver(named: "vdi") == VDIDriver.self)
    #expect(registry.driver(named: "vhd") == nil)
    #expect(registry.driver(named: "QED") == QEDDriver.self)
    #expect(registry.driver(named: "qcow") == QCOW1Driver.self)
  }

  /// A format added by a registry line alone: probed before raw, opened, read through the chain,
  /// and a stated format still has to match its magic.
  @Test func aToyDriverIsProbedAndOpened() throws {
    let scratch = try Scratch("registry")
    defer { scratch.remove() }
    let guest = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
    let toy = scratch.file("disk.toy")
    try Data(
      ToyDriver.magic + [UInt8](repeating: 0, count: ToyDriver.headerSize - ToyDriver.magic.count) + guest
    )
    .write(to: URL(fileURLWithPath: toy))
    let plain = scratch.file("plain.raw")
    try Data(guest).write(to: URL(fileURLWithPath: plain))

    let registry = FormatRegistry(drivers: [ToyDriver.self] + FormatRegistry.standard.drivers)
    #expect(try registry.probe(ImageFile.open(toy)).name == "toy")
    #expect(try registry.probe(ImageFile.open(plain)).name == "raw")
    #expect(try FormatRegistry.standard.probe(ImageFile.open(toy)).name == "raw")

    let chain = try openChain(toy, OpenOptions(registry: registry))
    #expect(chain.top.formatName == "toy")
    #expect(chain.virtualSize == UInt64(guest.count))
    #expect(try readAll(chain) == guest)
    #expect(
      try openChain(toy, OpenOptions(format: ToyDriver.self, registry: registry)).top.formatName == "toy")
    expectVDiskError(.corrupt, [plain, "toy magic"]) {
      _ = try openChain(plain, OpenOptions(format: ToyDriver.self, registry: registry))
    }
  }

  @Test func knownButUnsupportedMagicIsRefused() throws {
    let scratch = try Scratch("registry")
    defer { scratch.remove() }
    // Every magic the standard registry knows now opens; the refusal is for a registry that
    // lists a format without a driver.
    #expect(FormatRegistry.standard.unsupported.isEmpty)
    let image = scratch.file("old.toy")
    try Data(Array("OLDTOY\0\0".utf8) + [UInt8](repeating: 0, count: 504)).write(
      to: URL(fileURLWithPath: image))
    let registry = FormatRegistry(
      drivers: [RawDriver.self],
      unsupported: [FormatRegistry.Unsupported(name: "oldtoy", magic: Array("OLDTOY\0\0".utf8))])
    expectVDiskError(.unsupported, [image, "oldtoy images are not supported"]) {
      _ = try registry.probe(ImageFile.open(image))
    }
    // The qcow magic with version 1 is qcow (v1), with 2 or 3 qcow2, with another version a
    // qcow2 header that refuses it.
    for (version, name) in [(1, "qcow"), (2, "qcow2"), (3, "qcow2"), (4, "qcow2")] {
      let probe = ProbeBytes(
        head: [0x51, 0x46, 0x49, 0xFB, 0, 0, 0, UInt8(version)] + [UInt8](repeating: 0, count: 4088),
        tail: [UInt8](repeating: 0, count: 512))
      #expect(FormatRegistry.standard.recognize(probe)?.name == name)
    }
  }
}

/// A made-up format: "TOYDISK\0", then guest bytes from offset 512.
private enum ToyDriver: FormatDriver {
  static let name = "toy"
  static let summary = "a test format"
  static let magic = Array("TOYDISK\0".utf8)
  static let headerSize = 512

  static func matches(_ probe: ProbeBytes) -> Bool { probe.head(has: magic) }

  static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    guard file.size >= UInt64(headerSize) else { throw VDiskError.corrupt(file.path, "toy image too small") }
    return LayerPlan(file: file, parent: nil) { _, _ in ToyLayer(file: file) }
  }
}

private final class ToyLayer: ImageLayer {
  let file: ImageFile
  var formatName: String { ToyDriver.name }
  var backing: (any ImageLayer)? { nil }
  var virtualSize: UInt64 { file.size - UInt64(ToyDriver.headerSize) }

  init(file: ImageFile) { self.file = file }

  func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    Extent(
      offset: offset, length: maxLength, mapping: .data(hostOffset: offset + UInt64(ToyDriver.headerSize)),
      file: file)
  }

  var info: ImageInfo { ImageInfo(format: formatName, filename: file.path, virtualSize: virtualSize) }
}
