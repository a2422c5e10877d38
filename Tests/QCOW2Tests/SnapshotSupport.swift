import Foundation
import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// Images with internal snapshots, made by qemu-img between qemu-io writes.
enum SnapshotScenario: String, CaseIterable, Sendable, CustomTestStringConvertible {
  case plain, overBacking, compressed, extendedL2, resized, compat010
  var testDescription: String { rawValue }
}

struct SnapshotImage {
  let image: String
  /// Snapshot names, oldest first (IDs are 1, 2, 3).
  let names: [String]
}

func makeSnapshotImage(_ scenario: SnapshotScenario, in scratch: Scratch) throws -> SnapshotImage {
  let image = scratch.file("snap.qcow2")
  var options: [String] = []
  var backing: String?
  switch scenario {
  case .overBacking:
    let base = scratch.file("base.qcow2")
    try Qemu.create(base, size: "4M")
    try Qemu.io(base, ["write -P 0x5a 0 4M"])
    backing = "base.qcow2"
  case .extendedL2: options = ["extended_l2=on"]
  case .compat010: options = ["compat=0.10"]
  default: break
  }
  try Qemu.create(
    image, size: "4M", options: options, backing: backing, backingFormat: backing.map { _ in "qcow2" })
  let c = scenario == .compressed ? "-c " : ""
  try Qemu.io(image, ["write \(c)-P 0x11 0 1M", "write -P 0x12 3M 64k"])
  try Qemu.img("snapshot", "-c", "s1", image)
  var second = ["write -P 0x21 512k 1M", "write -z 2M 128k"]
  if scenario == .extendedL2 { second += ["write -P 0x22 2500k 3k", "write -z 3080k 2k"] }
  try Qemu.io(image, second)
  if scenario == .resized {
    try Qemu.img("resize", image, "6M")
    try Qemu.io(image, ["write -P 0x23 5M 64k"])
  }
  try Qemu.img("snapshot", "-c", "second snapshot", image)
  try Qemu.io(image, ["write -P 0x31 64k 64k", "discard 768k 128k", "write \(c)-P 0x32 1536k 128k"])
  try Qemu.img("snapshot", "-c", "s3", image)
  if scenario == .resized { try Qemu.img("resize", "--shrink", image, "3M") }
  try Qemu.io(image, ["write -P 0x41 0 64k", "write -z 1M 64k"])
  return SnapshotImage(image: image, names: ["s1", "second snapshot", "s3"])
}

/// The snapshot's content as QEMU shows it: `qemu-img snapshot -a` on a copy (which also takes
/// the snapshot's virtual size), then `qemu-img convert`. Returns the copy's path too.
func qemuSnapshotContent(_ image: String, name: String, scratch: Scratch) throws -> (
  copy: String, bytes: [UInt8]
) {
  let copy = scratch.file("applied-\(UUID().uuidString).qcow2")
  try FileManager.default.copyItem(atPath: image, toPath: copy)
  try Qemu.img("snapshot", "-a", name, copy)
  return (copy, try Qemu.rawContent(of: copy, scratch: scratch))
}

/// `qemu-img convert -l snapshot.name=NAME -O raw` (at the image's current virtual size).
func qemuConvertSnapshot(_ image: String, name: String, scratch: Scratch) throws -> [UInt8] {
  let out = scratch.file("converted-\(UUID().uuidString).raw")
  defer { try? FileManager.default.removeItem(atPath: out) }
  try Qemu.img("convert", "-l", "snapshot.name=\(name)", "-O", "raw", image, out)
  return try [UInt8](Data(contentsOf: URL(fileURLWithPath: out)))
}

/// The `snapshots` array of `qemu-img info --output=json`.
struct QemuSnapshot: Decodable, Equatable {
  var id: String
  var name: String
  var vmStateSize: UInt64
  var dateSec: UInt64
  var dateNsec: UInt64
  var vmClockSec: UInt64
  var vmClockNsec: UInt64
  var icount: UInt64?

  enum CodingKeys: String, CodingKey {
    case id, name, icount
    case vmStateSize = "vm-state-size"
    case dateSec = "date-sec"
    case dateNsec = "date-nsec"
    case vmClockSec = "vm-clock-sec"
    case vmClockNsec = "vm-clock-nsec"
  }
}

func qemuSnapshots(_ image: String) throws -> [QemuSnapshot] {
  struct Info: Decodable { var snapshots: [QemuSnapshot]? }
  let json = try Qemu.img("info", "--output=json", "-U", image)
  return try JSONDecoder().decode(Info.self, from: Data(json.utf8)).snapshots ?? []
}

extension QemuSnapshot {
  init(_ s: QCOW2Snapshot) {
    self.init(
      id: s.id, name: s.name, vmStateSize: s.vmStateSize, dateSec: UInt64(s.dateSeconds),
      dateNsec: UInt64(s.dateNanoseconds), vmClockSec: s.vmClockNanoseconds / 1_000_000_000,
      vmClockNsec: s.vmClockNanoseconds % 1_000_000_000, icount: s.icount)
  }
}

/// The whole guest disk of `layer` (and its backing chain), read through the engine.
func content(of layer: any ImageLayer) throws -> [UInt8] {
  try readAll(LayerChain(top: layer))
}

/// The qcow2 top layer of `image` opened with `options`.
func openQCOW2(_ image: String, _ options: OpenOptions = OpenOptions()) throws -> (LayerChain, QCOW2Layer) {
  let chain = try openChain(image, options)
  return (chain, try #require(chain.top as? QCOW2Layer))
}

/// A snapshot table entry built by hand (qcow2 spec, "Snapshot table entry"), for hostile tables.
struct CraftedSnapshot {
  var l1Offset: UInt64
  var l1Size: UInt32
  var id = "1"
  var name = "crafted"
  /// Overrides of the recorded lengths.
  var idLength: UInt16?
  var nameLength: UInt16?
  var extraSize: UInt32?
  /// VM state size (64-bit), disk size, icount.
  var diskSize: UInt64 = 4 << 20

  var bytes: [UInt8] {
    var b: [UInt8] = []
    func be(_ v: UInt64, _ width: Int) {
      for i in 0..<width { b.append(UInt8(truncatingIfNeeded: v >> UInt64(8 * (width - 1 - i)))) }
    }
    be(l1Offset, 8)
    be(UInt64(l1Size), 4)
    be(UInt64(idLength ?? UInt16(id.utf8.count)), 2)
    be(UInt64(nameLength ?? UInt16(name.utf8.count)), 2)
    be(1_700_000_000, 4)
    be(5, 4)
    be(7_000_000_123, 8)
    be(0, 4)
    be(UInt64(extraSize ?? 24), 4)
    be(0, 8)
    be(diskSize, 8)
    be(UInt64.max, 8)
    b += Array(id.utf8) + Array(name.utf8)
    while b.count % 8 != 0 { b.append(0) }
    return b
  }
}

/// Appends `table` at the next cluster boundary past the end of `image` and points the header at
/// it with `count` entries (default: as many as given). Returns the table's offset.
@discardableResult
func installTable(_ image: String, _ entries: [CraftedSnapshot], count: UInt32? = nil) throws -> UInt64 {
  let size = try FileManager.default.attributesOfItem(atPath: image)[.size] as? UInt64 ?? 0
  let offset = (size + 65535) & ~65535
  try patch(image, at: offset, bytes: entries.flatMap(\.bytes))
  try patch(image, at: 60, UInt64(count ?? UInt32(entries.count)), width: 4)
  try patch(image, at: 64, offset, width: 8)
  return offset
}
