import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

// Copied from Tests/QCOW2Tests/WriteSupport.swift and FaultInjectionSupport.swift (MirroredDisk,
// DurabilityModel and their helpers), with the format a parameter: these belong in
// Tests/Fixtures, shared by every format's write tests.

/// Opens `image` (and its parent chain) for writing.
func openWritable(_ image: String) throws -> LayerChain {
  try openChain(image, OpenOptions(writable: true))
}

/// What `qemu-img check -f vhdx` says: exit 0 and "No errors were found" when clean.
struct CheckReport: CustomStringConvertible {
  var status: Int32
  var output: String
  var isClean: Bool { status == 0 && output.contains("No errors were found") }
  var description: String { "qemu-img check exit \(status):\n\(output)" }
}

func qemuCheck(_ image: String, repair: Bool = false) throws -> CheckReport {
  let r = try run(
    "qemu-img", ["check", "-f", "vhdx"] + (repair ? ["-r", "all"] : []) + [image], check: false)
  return CheckReport(status: r.status, output: r.stdout + r.stderr)
}

/// `qemu-img compare` of a vhdx image against a raw file: true when identical.
func qemuIdentical(_ image: String, _ raw: String) throws -> (Bool, String) {
  let r = try run("qemu-img", ["compare", "-f", "vhdx", "-F", "raw", image, raw], check: false)
  return (r.status == 0 && r.stdout.contains("Images are identical"), r.stdout + r.stderr)
}

/// A checksum of a whole file (FNV-1a over 8-byte words), to prove a file never changed.
func checksum(_ path: String) throws -> UInt64 {
  let data = try Data(contentsOf: URL(fileURLWithPath: path))
  var hash: UInt64 = 0xCBF2_9CE4_8422_2325
  data.withUnsafeBytes { raw in
    let words = raw.count / 8
    for i in 0..<words {
      hash = (hash ^ raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) &* 0x0000_0100_0000_01B3
    }
    for i in words * 8..<raw.count { hash = (hash ^ UInt64(raw[i])) &* 0x0000_0100_0000_01B3 }
  }
  return hash ^ UInt64(data.count)
}

/// Whether `a[offset...]` starts with `b` (memcmp; fast in debug builds).
func same(_ a: [UInt8], _ offset: Int, _ b: [UInt8]) -> Bool {
  guard offset + b.count <= a.count else { return false }
  return a.withUnsafeBytes { x in
    b.withUnsafeBytes { y in
      guard let xb = x.baseAddress, let yb = y.baseAddress else { return true }
      return memcmp(xb + offset, yb, b.count) == 0
    }
  }
}

/// Bytes for write number `serial`: a value that changes every 512 bytes, so that misplaced or
/// shifted data shows.
func pattern(_ count: Int, serial: UInt64) -> [UInt8] {
  var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: serial &* 29 &+ 1), count: count)
  var i = 0
  while i < count {
    bytes[i] = UInt8(truncatingIfNeeded: serial &+ UInt64(i >> 9) &* 7) | 1
    i += 512
  }
  return bytes
}

/// A chain opened for writing next to an in-memory mirror of what the guest should see.
final class MirroredDisk {
  let chain: LayerChain
  var mirror: [UInt8]
  var serial: UInt64 = 0

  init(chain: LayerChain, mirror: [UInt8]) {
    self.chain = chain
    self.mirror = mirror
  }

  var size: UInt64 { UInt64(mirror.count) }

  func write(at offset: UInt64, count: Int) throws {
    serial += 1
    let bytes = pattern(count, serial: serial)
    let n = try bytes.withUnsafeBytes { try chain.write($0, at: offset) }
    #expect(n == count)
    mirror.withUnsafeMutableBytes { m in
      bytes.withUnsafeBytes { b in
        if let mb = m.baseAddress, let bb = b.baseAddress { memcpy(mb + Int(offset), bb, count) }
      }
    }
  }

  func discard(at offset: UInt64, count: Int, mode: DiscardMode) throws {
    try chain.discard(at: offset, length: UInt64(count), mode: mode)
    let n = min(count, mirror.count - Int(offset))
    mirror.withUnsafeMutableBytes { m in
      if let mb = m.baseAddress { memset(mb + Int(offset), 0, n) }
    }
  }

  /// Reads a range and compares it with the mirror; a description of the first difference, nil
  /// when equal.
  func verify(at offset: UInt64, count: Int) throws -> String? {
    let bytes = try chain.read(at: offset, count: count)
    if same(mirror, Int(offset), bytes) && bytes.count == count { return nil }
    let expected = Array(mirror[Int(offset)..<Int(offset) + count])
    let d = firstDifference(bytes, expected) ?? 0
    return "read of \(count) at \(hex(offset)) differs at \(hex(Int(offset) + d))"
  }

  func verifyAll() throws -> String? {
    var position: UInt64 = 0
    while position < size {
      let n = Int(min(8 << 20, size - position))
      if let d = try verify(at: position, count: n) { return d }
      position += UInt64(n)
    }
    return nil
  }

  /// Writes the mirror to a raw file for `qemu-img compare`.
  func saveMirror(_ path: String) throws {
    try Data(mirror).write(to: URL(fileURLWithPath: path))
  }
}

/// What the guest may read after a crash: every byte as of the last completed flush, except
/// bytes written (or attempted) since, which may read as either their durable or their newest
/// value. Writes between two flushes must not overlap, so that "newest" is one value per byte.
struct DurabilityModel {
  private(set) var durable: [UInt8]
  private var latest: [UInt8]
  private var touched: [Bool]

  init(_ initial: [UInt8]) {
    durable = initial
    latest = initial
    touched = [Bool](repeating: false, count: initial.count)
  }

  /// Records a write (or discard: zeros) that was attempted, whether or not it succeeded.
  mutating func attempt(_ bytes: [UInt8], at offset: Int) {
    for i in 0..<bytes.count {
      latest[offset + i] = bytes[i]
      touched[offset + i] = true
    }
  }

  /// A flush returned: everything attempted so far is durable.
  mutating func flushed() {
    durable = latest
    touched = [Bool](repeating: false, count: durable.count)
  }

  /// The first byte of `content` that is neither durable nor a pending write's value.
  func violation(in content: [UInt8]) -> String? {
    guard content.count == durable.count else { return "size \(content.count), expected \(durable.count)" }
    let piece = 4096
    for start in stride(from: 0, to: content.count, by: piece) {
      let count = min(piece, content.count - start)
      guard !same(durable, start, Array(content[start..<start + count])) else { continue }
      for i in start..<start + count where content[i] != durable[i] {
        if touched[i] && content[i] == latest[i] { continue }
        return "byte \(hex(i)) is \(content[i]), durable \(durable[i])"
          + (touched[i] ? " (pending \(latest[i]))" : " (not written since the last flush)")
      }
    }
    return nil
  }
}
