import Foundation
import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// Opens `image` (and its backing chain) for writing.
func openWritable(_ image: String) throws -> LayerChain {
  try openChain(image, OpenOptions(writable: true))
}

/// What `qemu-img check` says about an image: its exit status (0 clean, 2 corrupt, 3 leaks) and
/// the counts it prints.
struct CheckReport: CustomStringConvertible {
  var status: Int32
  var output: String
  var errors: Int { count(before: "errors were found") + count(before: "error was found") }
  var leaks: Int { count(before: "leaked clusters were found") + count(before: "leaked cluster was found") }
  var isClean: Bool { status == 0 && output.contains("No errors were found") }
  var description: String { "qemu-img check exit \(status):\n\(output)" }

  private func count(before phrase: String) -> Int {
    for line in output.split(separator: "\n") where line.contains(phrase) {
      return Int(line.split(separator: " ").first ?? "") ?? 0
    }
    return 0
  }
}

func qemuCheck(_ image: String) throws -> CheckReport {
  let r = try run("qemu-img", ["check", image], check: false)
  return CheckReport(status: r.status, output: r.stdout + r.stderr)
}

/// `qemu-img compare` of a qcow2 image against a raw file: true when identical.
func qemuIdentical(_ image: String, _ raw: String) throws -> (Bool, String) {
  let r = try run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", image, raw], check: false)
  return (r.status == 0 && r.stdout.contains("Images are identical"), r.stdout + r.stderr)
}

/// SHA-free checksum of a whole file (FNV-1a over 8-byte words), to prove a file never changed.
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

/// Whether `a[range]` equals `b` (memcmp; fast in debug builds).
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

  /// Reads a range and compares it with the mirror; returns a description of the first
  /// difference, nil when equal.
  func verify(at offset: UInt64, count: Int) throws -> String? {
    let bytes = try chain.read(at: offset, count: count)
    if same(mirror, Int(offset), bytes) { return nil }
    let expected = Array(mirror[Int(offset)..<Int(offset) + bytes.count])
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
