import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VMDK

// Small pieces copied from Tests/QCOW2Tests/WriteSupport.swift and FaultInjectionSupport.swift
// (MirroredDisk, DurabilityModel, the check helpers), made for vmdk. They belong in
// Tests/Fixtures, shared by every format's write tests.

/// Opens `image` (and its backing chain) for writing.
func openWritable(_ image: String, cacheSize: Int? = nil) throws -> LayerChain {
  var options = OpenOptions(writable: true)
  options.cacheSize = cacheSize
  return try openChain(image, options)
}

/// What `qemu-img check -f vmdk` says: exit status (0 clean) and its output.
struct VMDKCheckReport: CustomStringConvertible {
  var status: Int32
  var output: String
  var isClean: Bool { status == 0 && output.contains("No errors were found") }
  var description: String { "qemu-img check exit \(status):\n\(output)" }
}

func qemuCheckVMDK(_ image: String) throws -> VMDKCheckReport {
  let r = try run("qemu-img", ["check", "-f", "vmdk", image], check: false)
  return VMDKCheckReport(status: r.status, output: r.stdout + r.stderr)
}

/// `qemu-img compare` of a vmdk against a raw file: true when identical.
func qemuIdenticalVMDK(_ image: String, _ raw: String) throws -> (Bool, String) {
  let r = try run("qemu-img", ["compare", "-f", "vmdk", "-F", "raw", image, raw], check: false)
  return (r.status == 0 && r.stdout.contains("Images are identical"), r.stdout + r.stderr)
}

/// FNV-1a over a whole file, to prove a file never changed.
func fileChecksum(_ path: String) throws -> UInt64 {
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
func sameBytes(_ a: [UInt8], _ offset: Int, _ b: [UInt8]) -> Bool {
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
func writePattern(_ count: Int, serial: UInt64) -> [UInt8] {
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
    let bytes = writePattern(count, serial: serial)
    let n = try bytes.withUnsafeBytes { try chain.write($0, at: offset) }
    #expect(n == count)
    mirror.replaceSubrange(Int(offset)..<Int(offset) + count, with: bytes)
  }

  func discard(at offset: UInt64, count: Int, mode: DiscardMode) throws {
    try chain.discard(at: offset, length: UInt64(count), mode: mode)
    let n = min(count, mirror.count - Int(offset))
    mirror.replaceSubrange(Int(offset)..<Int(offset) + n, with: repeatElement(0, count: n))
  }

  /// Reads a range and compares it with the mirror; a description of the first difference, nil
  /// when equal.
  func verify(at offset: UInt64, count: Int) throws -> String? {
    let bytes = try chain.read(at: offset, count: count)
    if sameBytes(mirror, Int(offset), bytes) { return nil }
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

  func saveMirror(_ path: String) throws {
    try Data(mirror).write(to: URL(fileURLWithPath: path))
  }
}

/// What the guest may read after a crash: every byte as of the last completed flush, except
/// bytes written (or attempted) since, which may read as either their durable or their newest
/// value. Writes between two flushes must not overlap.
struct DurabilityModel {
  private(set) var durable: [UInt8]
  private var latest: [UInt8]
  private var touched: [Bool]

  init(_ initial: [UInt8]) {
    durable = initial
    latest = initial
    touched = [Bool](repeating: false, count: initial.count)
  }

  mutating func attempt(_ bytes: [UInt8], at offset: Int) {
    for i in 0..<bytes.count {
      latest[offset + i] = bytes[i]
      touched[offset + i] = true
    }
  }

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
      guard !sameBytes(durable, start, Array(content[start..<start + count])) else { continue }
      for i in start..<start + count where content[i] != durable[i] {
        if touched[i] && content[i] == latest[i] { continue }
        return "byte \(hex(i)) is \(content[i]), durable \(durable[i])"
          + (touched[i] ? " (pending \(latest[i]))" : " (not written since the last flush)")
      }
    }
    return nil
  }
}

/// A monolithicSparse vmdk opened for writing over a `FaultInjectingSource` (no opener, no
/// locks), so that a test can fail or cut its I/O.
struct FaultyVMDK {
  let chain: LayerChain
  let source: FaultInjectingSource

  init(_ image: String, cacheBudget: Int = 32 << 20, crashAfter: Int? = nil) throws {
    source = FaultInjectingSource(wrapping: try FileDescriptorSource.open(image, writable: true))
    if let crashAfter { source.crash(afterStage: crashAfter) }
    let file = try ImageFile(source: source, path: image, isWritable: true)
    let plan = try VMDKDriver.plan(file, context: PlanContext(logger: logger, writable: true))
    chain = LayerChain(top: try plan.build(nil, MetadataCache(budget: cacheBudget)))
  }
}

/// Requires that `qemu-img check` finds no corruption.
func expectNoCorruptionVMDK(
  _ image: String, _ context: String, sourceLocation: SourceLocation = #_sourceLocation
) throws {
  let report = try qemuCheckVMDK(image)
  if report.status != 0 || report.output.contains("ERROR") {
    Issue.record("\(context): \(report)", sourceLocation: sourceLocation)
  }
}

/// Little-endian fields of a hosted sparse extent header (vmdk spec, "File header").
struct SparseHeaderFields {
  var grainDirectory: UInt64
  var redundantDirectory: UInt64
  var tableEntries: Int
  var directoryEntries: Int
  var dirtyByte: UInt8

  init(_ path: String) throws {
    let bytes = LEBytes(bytes: Array(try readFile(path).prefix(512)))
    let capacity = bytes.u64(12)
    let grain = bytes.u64(20)
    tableEntries = Int(bytes.u32(44))
    redundantDirectory = bytes.u64(48) * 512
    grainDirectory = bytes.u64(56) * 512
    let coverage = UInt64(tableEntries) * grain
    directoryEntries = Int((capacity + coverage - 1) / coverage)
    dirtyByte = bytes.bytes[72]
  }

  /// Entries of the primary or the redundant directory.
  func directory(_ path: String, redundant: Bool = false) throws -> [UInt64] {
    let bytes = LEBytes(bytes: try readFile(path))
    let at = Int(redundant ? redundantDirectory : grainDirectory)
    return (0..<directoryEntries).map { bytes.u32(at + $0 * 4) }
  }

  /// Empties GD entries `indices` in both directories (their tables become leaked space): an
  /// image whose grain tables do not all exist, as other tools make them.
  func emptyDirectoryEntries(_ path: String, _ indices: [Int]) throws {
    for index in indices {
      try patchLE(path, at: grainDirectory + UInt64(index) * 4, 0, width: 4)
      if redundantDirectory != 0 {
        try patchLE(path, at: redundantDirectory + UInt64(index) * 4, 0, width: 4)
      }
    }
  }
}
