import Foundation
import TestSupport
import VDiskCore

/// `value` as `width` big-endian bytes (qcow v1 fields).
func bigEndian(_ value: UInt64, width: Int) -> [UInt8] {
  (0..<width).reversed().map { UInt8(truncatingIfNeeded: value >> UInt64(8 * $0)) }
}

/// Overwrites `width` bytes at `offset` of `path` with `value`, big-endian.
func patchBE(_ path: String, at offset: UInt64, _ value: UInt64, width: Int) throws {
  try patch(path, at: offset, bytes: bigEndian(value, width: width))
}

/// A big-endian u64 of a file.
func u64BE(_ path: String, at offset: UInt64) throws -> UInt64 {
  let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
  defer { try? handle.close() }
  try handle.seek(toOffset: offset)
  return (try handle.read(upToCount: 8) ?? Data()).reduce(0) { $0 << 8 | UInt64($1) }
}

/// A qcow version 1 image written from scratch (qcow.asciidoc, "File header – version 1"), with
/// raw clusters only, in the cluster and L2 sizes qemu-img does not make (it makes 4 KiB clusters
/// and 512-entry tables only): header, backing name, L1 table, then per guest cluster with data an
/// L2 table (when its L1 entry has none yet) and the cluster.
struct QCOW1Builder {
  var size: UInt64
  var clusterBits: UInt8
  var l2Bits: UInt8
  /// Guest clusters with data, by cluster number.
  var clusters: [UInt64: [UInt8]]

  func bytes() -> [UInt8] {
    let clusterSize = 1 << Int(clusterBits)
    let l2Entries = 1 << Int(l2Bits)
    let coverage = UInt64(clusterSize * l2Entries)
    let l1Entries = Int((size + coverage - 1) / coverage)
    var file = [UInt8](repeating: 0, count: 48)
    func put(_ offset: Int, _ bytes: [UInt8]) {
      file.replaceSubrange(offset..<offset + bytes.count, with: bytes)
    }
    put(0, [0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 1])
    put(24, bigEndian(size, width: 8))
    file[32] = clusterBits
    file[33] = l2Bits
    put(40, bigEndian(48, width: 8))
    file += [UInt8](repeating: 0, count: l1Entries * 8)
    func align() {
      file += [UInt8](repeating: 0, count: (clusterSize - file.count % clusterSize) % clusterSize)
    }
    var tables: [Int: Int] = [:]
    for (cluster, data) in clusters.sorted(by: { $0.key < $1.key }) {
      let l1Index = Int(cluster / UInt64(l2Entries))
      let table: Int
      if let known = tables[l1Index] {
        table = known
      } else {
        align()
        table = file.count
        tables[l1Index] = table
        put(48 + l1Index * 8, bigEndian(UInt64(table), width: 8))
        file += [UInt8](repeating: 0, count: l2Entries * 8)
      }
      align()
      let slot = table + Int(cluster % UInt64(l2Entries)) * 8
      put(slot, bigEndian(UInt64(file.count), width: 8))
      file += data
    }
    return file
  }

  /// The guest bytes.
  var content: [UInt8] {
    let clusterSize = 1 << Int(clusterBits)
    var out = [UInt8](repeating: 0, count: Int(size / 512 * 512))
    for (cluster, data) in clusters {
      let start = Int(cluster) * clusterSize
      let n = min(clusterSize, out.count - start)
      if n > 0 { out.replaceSubrange(start..<start + n, with: data[0..<n]) }
    }
    return out
  }
}

/// `qemu-img convert -c -O qcow SOURCE IMAGE`. QEMU 7.2 exits 1 without a message after writing a
/// correct image (its end-of-stream empty compressed write is refused by the qcow v1 driver), so
/// the status is not trusted: `qemu-img compare` must find the image identical to the source.
func convertCompressed(_ source: String, sourceFormat: String, to image: String) throws {
  _ = try run("qemu-img", ["convert", "-c", "-f", sourceFormat, "-O", "qcow", source, image], check: false)
  let compare = try run(
    "qemu-img", ["compare", "-f", sourceFormat, "-F", "qcow", source, image], check: false)
  guard compare.status == 0 else {
    throw VDiskError(.io, path: image, "qemu-img convert -c -O qcow did not make a copy: \(compare.stdout)")
  }
}
