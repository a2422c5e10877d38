import Appliance
import Foundation
import ImageFormats
import Logging
import TestSupport
import VDiskCore

let testLogger = Logger(label: "appliance-tests")

/// One disk of a test appliance: a qcow2 with scattered patterns, converted to streamOptimized
/// VMDK, and qemu's raw conversion of the source (the oracle).
struct ApplianceSource {
  var vmdk: String
  var raw: String
  var size: UInt64
}

enum ApplianceFixture {
  static func disk(_ name: String, size: UInt64, seed: UInt64, in scratch: Scratch) throws -> ApplianceSource
  {
    let qcow2 = scratch.file(name + ".qcow2")
    try Qemu.create(qcow2, format: "qcow2", size: "\(size >> 20)M")
    _ = try Qemu.scatterPatterns(qcow2, format: "qcow2", size: size, count: 20, seed: seed, maxUnits: 512)
    let vmdk = scratch.file(name)
    _ = try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", qcow2, vmdk)
    return ApplianceSource(
      vmdk: vmdk, raw: try Qemu.rawFile(of: qcow2, format: "qcow2", scratch: scratch), size: size)
  }

  /// An OVF naming `disks` (file names relative to the descriptor, with their sizes).
  static func ovf(_ disks: [(href: String, size: UInt64, capacity: UInt64)], extraFileAttributes: String = "")
    -> String
  {
    var files = ""
    var section = ""
    for (i, d) in disks.enumerated() {
      files +=
        "    <File ovf:href=\"\(d.href)\" ovf:id=\"file\(i + 1)\" ovf:size=\"\(d.size)\"\(extraFileAttributes)/>\n"
      section +=
        "    <Disk ovf:capacity=\"\(d.capacity)\" ovf:diskId=\"vmdisk\(i + 1)\" ovf:fileRef=\"file\(i + 1)\" ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>\n"
    }
    return """
      <?xml version="1.0" encoding="UTF-8"?>
      <Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
        <References>
      \(files)  </References>
        <DiskSection>
          <Info>Virtual disks</Info>
      \(section)  </DiskSection>
      </Envelope>

      """
  }

  static func fileSize(_ path: String) throws -> UInt64 {
    (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
  }

  /// Builds `name.ova` in `directory` from files already there (descriptor first), with a
  /// manifest of SHA-256 digests (`sha256sum`) when `manifest`.
  static func tar(
    _ ova: String, directory: String, members: [String], manifest: Bool = true, format: String = "ustar"
  ) throws {
    var names = members
    if manifest, let ovf = members.first {
      let mf = String(ovf.dropLast(4)) + ".mf"
      var text = ""
      for m in members {
        let sum = try run("sha256sum", [directory + "/" + m]).stdout.split(separator: " ").first ?? ""
        text += "SHA256(\(m))= \(sum)\n"
      }
      try text.write(toFile: directory + "/" + mf, atomically: true, encoding: .utf8)
      names.append(mf)
    }
    try run("tar", ["--format=\(format)", "-C", directory, "-cf", ova] + names)
  }

  /// Every disk of `appliance` read through the API equals its oracle byte for byte.
  static func disksMatch(_ appliance: Appliance, _ sources: [ApplianceSource]) throws -> Bool {
    guard appliance.disks.count == sources.count else { return false }
    for (disk, source) in zip(appliance.disks, sources) {
      let chain = try disk.open(logger: testLogger)
      guard chain.virtualSize == source.size else { return false }
      var bytes = [UInt8](repeating: 0, count: Int(source.size))
      let n = try bytes.withUnsafeMutableBytes { try chain.read(into: $0, at: 0) }
      guard n == bytes.count, try Data(contentsOf: URL(fileURLWithPath: source.raw)) == Data(bytes) else {
        return false
      }
    }
    return true
  }
}
