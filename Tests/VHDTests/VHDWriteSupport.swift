import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VHD

// Pieces copied from Tests/QCOW2Tests/WriteSupport.swift and FaultInjectionSupport.swift
// (MirroredDisk, pattern, same, checksum, DurabilityModel): they belong in Tests/Fixtures, shared
// by every format's write tests.

/// Opens `image` (and its backing chain) for writing.
func openWritable(_ image: String) throws -> LayerChain {
  try openChain(image, OpenOptions(writable: true))
}

/// FNV-1a over 8-byte words of a whole file, to prove a file never changed.
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

/// Whether `a[offset..<offset + b.count]` equals `b` (memcmp; fast in debug builds).
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
      precondition(!touched[offset + i] || latest[offset + i] == bytes[i], "test writes overlap in a group")
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

/// The layout of a VHD file as the test reads it on its own (vhd.asciidoc), to check what a
/// writer left: footers, BAT, blocks.
struct VHDLayoutCheck {
  var problems: [String] = []
  /// Allocated blocks: index → host offset of the block (its bitmap).
  var blocks: [Int: UInt64] = [:]
  var blockSize: UInt64 = 0
  var bitmapSize: UInt64 = 0

  /// Checks `path`: a valid footer at the end (and, unless fixed, a valid copy at 0 equal to it),
  /// a valid dynamic header, and every BAT entry naming a whole block inside the file, before
  /// the footer, after the BAT and overlapping no other block.
  init(_ path: String, virtualSize: UInt64) throws {
    let size = try fileSize(path)
    guard size >= 512 else {
      problems.append("file of \(size) bytes")
      return
    }
    let end = try readBytes(path, at: size - 512, count: 512)
    if Array(end[0..<8]) != Array("conectix".utf8) { problems.append("no footer cookie at the end") }
    let sum = end[64..<68].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    if sum != vhdChecksum(end, field: 64..<68) { problems.append("footer checksum at the end is wrong") }
    let type = end[60..<64].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    guard type != 2 else { return }
    let copy = try readBytes(path, at: 0, count: 512)
    if copy != end { problems.append("footer copy at offset 0 differs from the footer at the end") }
    let dataOffset = try field(path, at: 16, width: 8)
    let header = try readBytes(path, at: dataOffset, count: 1024)
    let headerSum = header[36..<40].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    if headerSum != vhdChecksum(header, field: 36..<40) {
      problems.append("dynamic header checksum is wrong")
    }
    let bat = try field(path, at: dataOffset + 16, width: 8)
    let maxEntries = try field(path, at: dataOffset + 28, width: 4)
    blockSize = try field(path, at: dataOffset + 32, width: 4)
    bitmapSize = (blockSize / 4096 + 511) / 512 * 512
    let count = Int((virtualSize + blockSize - 1) / blockSize)
    let table = try readBytes(path, at: bat, count: count * 4)
    var ranges: [(UInt64, UInt64, Int)] = []
    for i in 0..<count {
      let entry = table[i * 4..<i * 4 + 4].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
      guard entry != 0xFFFF_FFFF else { continue }
      let start = entry * 512
      let stop = start + bitmapSize + blockSize
      if start < bat + maxEntries * 4 {
        problems.append("block \(i) at \(hex(start)) lies before the BAT's end")
      }
      // qemu refuses an image whose last block ends past the end of the file.
      if stop > size - 512 { problems.append("block \(i) at \(hex(start)) ends past the footer") }
      blocks[i] = start
      ranges.append((start, stop, i))
    }
    ranges.sort { $0.0 < $1.0 }
    for (a, b) in zip(ranges, ranges.dropFirst()) where b.0 < a.1 {
      problems.append("blocks \(a.2) and \(b.2) overlap")
    }
  }

  /// Whether guest sector `sector`'s bitmap bit is set in `file` (the image's bytes; false when
  /// its block is unallocated).
  func sectorHeld(_ sector: Int, file: [UInt8]) -> Bool {
    let perBlock = Int(blockSize / 512)
    guard perBlock > 0, let start = blocks[sector / perBlock] else { return false }
    let s = sector % perBlock
    let byte = Int(start) + s / 8
    return byte < file.count && file[byte] & (0x80 >> UInt8(s % 8)) != 0
  }
}

/// `qemu-img compare` of a vpc image against a raw file: true when identical.
func qemuIdenticalVPC(_ image: String, _ raw: String) throws -> (Bool, String) {
  let r = try run("qemu-img", ["compare", "-f", "vpc", "-F", "raw", image, raw], check: false)
  return (r.status == 0 && r.stdout.contains("Images are identical"), r.stdout + r.stderr)
}

/// A vpc image (and its parent, for a differencing disk) opened for writing over a
/// `FaultInjectingSource`, built layer by layer (no opener, no image locks), so that a test can
/// fail or cut its I/O.
struct FaultyVHD {
  let chain: LayerChain
  let source: FaultInjectingSource

  init(_ image: String, parent: String? = nil, cacheBudget: Int = 32 << 20, crashAfter: Int? = nil) throws {
    source = FaultInjectingSource(wrapping: try FileDescriptorSource.open(image, writable: true))
    if let crashAfter { source.crash(afterStage: crashAfter) }
    let cache = MetadataCache(budget: cacheBudget)
    var below: (any ImageLayer)?
    if let parent {
      let file = try ImageFile.open(parent)
      below = try VHDDriver.plan(file, context: PlanContext(logger: logger)).build(nil, cache)
    }
    let file = try ImageFile(source: source, path: image, isWritable: true)
    let plan = try VHDDriver.plan(file, context: PlanContext(logger: logger, writable: true))
    chain = LayerChain(top: try plan.build(below, cache))
  }
}
