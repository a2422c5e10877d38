import Foundation
import TestSupport

/// A DiskDescriptor.xml written by the test (QEMU docs/interop/prl-xml.rst).
struct BundleXML {
  struct Image {
    var guid: String
    var type = "Compressed"
    var file: String
  }

  struct Storage {
    var start: UInt64
    var end: UInt64
    var images: [Image]
  }

  var sectors: UInt64
  var storages: [Storage]
  /// (GUID, parent GUID) of each Shot.
  var shots: [(String, String)]
  var top: String?
  var padding = "0"

  static let root = "{00000000-0000-0000-0000-000000000000}"
  static let defaultTop = "{5fbaabe3-6958-40ff-92a7-860e329aab41}"

  var text: String {
    var xml = """
      <?xml version='1.0' encoding='UTF-8'?>
      <!-- written by vdiskfs tests -->
      <Parallels_disk_image Version="1.0">
          <Disk_Parameters>
              <Disk_size>\(sectors)</Disk_size>
              <Cylinders>\(sectors / 512)</Cylinders>
              <PhysicalSectorSize>512</PhysicalSectorSize>
              <Heads>16</Heads>
              <Sectors>32</Sectors>
              <Padding>\(padding)</Padding>
              <Miscellaneous><CompatLevel>level2</CompatLevel></Miscellaneous>
          </Disk_Parameters>
          <StorageData>

      """
    for storage in storages {
      xml += "        <Storage>\n            <Start>\(storage.start)</Start>\n"
      xml += "            <End>\(storage.end)</End>\n            <Blocksize>2048</Blocksize>\n"
      for image in storage.images {
        xml += "            <Image>\n                <GUID>\(image.guid)</GUID>\n"
        xml += "                <Type>\(image.type)</Type>\n                <File>\(image.file)</File>\n"
        xml += "            </Image>\n"
      }
      xml += "        </Storage>\n"
    }
    xml += "    </StorageData>\n    <Snapshots>\n"
    if let top { xml += "        <TopGUID>\(top)</TopGUID>\n" }
    for (guid, parent) in shots {
      xml +=
        "        <Shot>\n            <GUID>\(guid)</GUID>\n            <ParentGUID>\(parent)</ParentGUID>\n        </Shot>\n"
    }
    xml += "    </Snapshots>\n</Parallels_disk_image>\n"
    return xml
  }

  /// Writes the descriptor into `folder` (made if missing); returns its path.
  @discardableResult
  func write(in folder: String) throws -> String {
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let path = folder + "/DiskDescriptor.xml"
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    return path
  }
}

/// A GUID in braces for snapshot `n`.
func guid(_ n: Int) -> String { String(format: "{%08x-1111-2222-3333-444455556666}", n) }

/// `qemu-img create -f parallels` an image of `size` bytes in `folder` and applies `writes`
/// (offset, length, pattern) with qemu-io.
func expandingImage(
  _ folder: String, _ name: String, size: UInt64, clusterSize: String = "64k",
  writes: [(UInt64, UInt64, UInt8)]
) throws -> String {
  let path = folder + "/" + name
  try Qemu.create(path, format: "parallels", size: "\(size)", options: ["cluster_size=\(clusterSize)"])
  if !writes.isEmpty {
    try Qemu.io(path, format: "parallels", writes.map { "write -P \($0.2) \($0.0) \($0.1)" })
  }
  return path
}

/// Applies `writes` (offset, length, pattern) to `bytes`, shifted by `base`.
func apply(_ writes: [(UInt64, UInt64, UInt8)], to bytes: inout [UInt8], base: UInt64 = 0) {
  for (offset, length, pattern) in writes {
    let start = Int(base + offset)
    bytes.replaceSubrange(start..<start + Int(length), with: [UInt8](repeating: pattern, count: Int(length)))
  }
}
