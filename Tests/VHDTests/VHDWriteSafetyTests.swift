import Foundation
import ImageFormats
import SystemPackage
import TestSupport
import Testing
import VDiskCore
import VHD

/// What the VHD writer refuses, and what a failing write leaves: a writable open of a damaged or
/// hostile layout is refused with a clear `.readOnly` error (reading still works), resizing is
/// refused as qemu-img refuses it, and a failed data write loses nothing acknowledged.
@Suite struct VHDWriteSafetyTests {
  /// A 4 MiB dynamic image (2 MiB blocks) with qemu data in both blocks.
  static func dynamicImage(_ scratch: Scratch) throws -> String {
    let image = scratch.file("w.vhd")
    try Qemu.create(image, format: "vpc", size: "4M", options: ["force_size=on"])
    try Qemu.io(image, format: "vpc", ["write -P 0x42 0 4M"])
    return image
  }

  static func batEntry(_ image: String, _ index: UInt64) throws -> UInt64 {
    try field(image, at: try field(image, at: 512 + 16, width: 8) + 4 * index, width: 4)
  }

  static func setBATEntry(_ image: String, _ index: UInt64, _ value: UInt64) throws {
    try patch(image, at: try field(image, at: 512 + 16, width: 8) + 4 * index, value, width: 4)
  }

  @Test func hostileLayoutsAreRefusedForWritingButStillRead() throws {
    let scratch = try Scratch("vpc-write-hostile")
    defer { scratch.remove() }
    let image = try Self.dynamicImage(scratch)
    let original = try readBytes(image, at: 0, count: Int(try fileSize(image)))
    func reset() throws { try Data(original).write(to: URL(fileURLWithPath: image)) }
    let footer = try fileSize(image) - 512

    // Block 1 reaching into the footer: a new block would be written over it.
    try Self.setBATEntry(image, 1, (footer - 512 - (1 << 20)) / 512)
    expectVDiskError(.readOnly, [image, "cannot write", "block 1", "past the footer"]) {
      _ = try openWritable(image)
    }
    #expect(try openChain(image).read(at: 0, count: 4096).allSatisfy { $0 == 0x42 })

    // Both entries naming the same block.
    try reset()
    try Self.setBATEntry(image, 1, try Self.batEntry(image, 0))
    expectVDiskError(.readOnly, [image, "cannot write", "overlap"]) { _ = try openWritable(image) }
    #expect(try openChain(image).read(at: 3 << 20, count: 4096).allSatisfy { $0 == 0x42 })

    // A block over the BAT.
    try reset()
    try Self.setBATEntry(image, 0, 3)
    expectVDiskError(.readOnly, [image, "cannot write", "block 0", "overlaps the BAT"]) {
      _ = try openWritable(image)
    }

    // Past the end of the file altogether.
    try reset()
    try Self.setBATEntry(image, 1, 0x7FFF_FFF0)
    expectVDiskError(.readOnly, [image, "cannot write", "block 1"]) { _ = try openWritable(image) }

    // The footer at the end damaged: reads use the copy at 0, writes are refused.
    try reset()
    try patch(image, at: footer + 40, 0xDEAD, width: 2)
    expectVDiskError(.readOnly, [image, "cannot write", "footer at the end"]) { _ = try openWritable(image) }
    #expect(try readAll(openChain(image)).allSatisfy { $0 == 0x42 })

    // The mount path: a refused writable open falls back to read-only, so the opener's error
    // kind must be .readOnly, which these are; the sound image opens for writing.
    try reset()
    let chain = try openWritable(image)
    #expect(chain.top is any WritableLayer)
    #expect(try chain.writableTop.writeUnit == 2 << 20)
  }

  /// qemu-img resize refuses vpc images (QEMU 7.2: "Image format driver does not support
  /// resize"); so does vdiskfs, growing or shrinking, fixed or dynamic.
  @Test func resizeIsRefusedLikeQemu() throws {
    let scratch = try Scratch("vpc-resize")
    defer { scratch.remove() }
    for subformat in ["fixed", "dynamic"] {
      let image = scratch.file("\(subformat).vhd")
      try Qemu.create(image, format: "vpc", size: "4M", options: ["subformat=\(subformat)"])
      let r = try run("qemu-img", ["resize", "-f", "vpc", image, "8M"], check: false)
      #expect(r.status != 0, "qemu-img resize now accepts vpc: \(r.stdout)")
      let before = try fileChecksum(image)
      let chain = try openWritable(image)
      for (size, shrink) in [(UInt64(8 << 20), false), (UInt64(2 << 20), true)] {
        expectVDiskError(.unsupported, [image, "resizing VHD"]) {
          try chain.resize(to: size, allowShrink: shrink)
        }
      }
      #expect(try fileChecksum(image) == before)
    }
  }

  /// A data write failing with EIO or ENOSPC (into a new block, and in place) reaches the caller
  /// with the matching kind; the range keeps its old bytes, the chain keeps working, and after
  /// reopening every flushed write is there, read by vdiskfs and by qemu. A failing footer
  /// write (the first step of an allocation) leaves the image as it was.
  @Test(arguments: [(Errno.ioError, VDiskError.Kind.io), (Errno.noSpace, VDiskError.Kind.noSpace)])
  func aFailedDataWriteLosesNothingAcknowledged(error: Errno, kind: VDiskError.Kind) throws {
    let scratch = try Scratch("vpc-fault-write")
    defer { scratch.remove() }
    let image = scratch.file("f.vhd")
    try Qemu.create(image, format: "vpc", size: "8M", options: ["force_size=on"])
    try Qemu.io(image, format: "vpc", ["write -P 0x31 0 256k"])
    var model = DurabilityModel(try Qemu.rawContent(of: image, format: "vpc", scratch: scratch))
    do {
      let disk = try FaultyChain(image, format: VHDDriver.self)
      func write(_ byte: UInt8, at offset: Int, count: Int) throws {
        let bytes = [UInt8](repeating: byte, count: count)
        model.attempt(bytes, at: offset)
        #expect(try bytes.withUnsafeBytes { try disk.chain.write($0, at: UInt64(offset)) } == count)
      }
      try write(0x41, at: 2 << 20, count: 10_000)  // a new block
      try write(0x42, at: 5000, count: 3000)  // in place
      try disk.chain.flush()
      model.flushed()

      // The data of a new block: it lies between the bitmap (which replaces the footer) and
      // the new footer.
      let end = disk.chain.top.file.size
      disk.source.failWrites(overlapping: end..<end + (2 << 20), with: error)
      expectVDiskError(kind, ["write of", "failed"]) {
        _ = try [UInt8](repeating: 0x43, count: 6000).withUnsafeBytes {
          try disk.chain.write($0, at: 6 << 20)
        }
      }
      // The footer of a new block.
      let footerAt = disk.chain.top.file.size + (2 << 20)
      disk.source.failWrites(overlapping: footerAt..<UInt64.max, with: error)
      expectVDiskError(kind, ["write of", "failed"]) {
        _ = try [UInt8](repeating: 0x44, count: 512).withUnsafeBytes { try disk.chain.write($0, at: 4 << 20) }
      }
      // An overwrite in place.
      guard case .data(let host) = try disk.chain.top.extent(at: 20000, maxLength: 1).mapping else {
        Issue.record("guest 20000 is not stored in the image")
        return
      }
      disk.source.failWrites(overlapping: host..<host + 1, with: error)
      expectVDiskError(kind, ["write of", "failed"]) {
        _ = try [UInt8](repeating: 0x45, count: 2000).withUnsafeBytes { try disk.chain.write($0, at: 19000) }
      }
      #expect(model.violation(in: try readAll(disk.chain)) == nil)
      try write(0x46, at: 6 << 20, count: 6000)
      try write(0x47, at: 4 << 20, count: 512)
      try write(0x48, at: 19000, count: 2000)
      try disk.chain.flush()
      model.flushed()
    }
    let layout = try VHDLayoutCheck(image, virtualSize: 8 << 20)
    #expect(layout.problems.isEmpty, "\(layout.problems)")
    #expect(model.violation(in: try readAll(try openChain(image))) == nil)
    #expect(model.violation(in: try Qemu.rawContent(of: image, format: "vpc", scratch: scratch)) == nil)
  }

  /// What a flush costs: one fdatasync with nothing dirty; in-place writes add no metadata; a
  /// new block is a footer and a bitmap before its data, and its BAT entry waits for the flush,
  /// after a sync.
  @Test func writeBackOrderAndCost() throws {
    let scratch = try Scratch("vpc-order")
    defer { scratch.remove() }
    let image = scratch.file("o.vhd")
    try Qemu.create(image, format: "vpc", size: "8M", options: ["force_size=on"])
    try Qemu.io(image, format: "vpc", ["write -P 0x31 0 64k"])
    let bat = try field(image, at: 512 + 16, width: 8)
    let disk = try FaultyChain(image, format: VHDDriver.self)
    try disk.chain.flush()
    #expect(disk.source.stages.map(\.kind) == [.sync])

    let end = disk.chain.top.file.size
    _ = try [UInt8](repeating: 0x51, count: 4096).withUnsafeBytes {
      try disk.chain.write($0, at: (2 << 20) + 8192)
    }
    let allocation = Array(disk.source.stages.dropFirst())
    // The new footer first (after the block), then the bitmap over the old footer, then data.
    #expect(allocation.count == 3, "\(allocation)")
    if allocation.count == 3 {
      #expect(allocation[0].offset == end - 512 + 512 + (2 << 20) && allocation[0].length == 512)
      #expect(allocation[1].offset == end - 512 && allocation[1].length == 512)
      #expect(allocation[2].offset == end + 8192 && allocation[2].length == 4096)
    }
    // Not on disk yet: qemu sees the block unallocated.
    #expect(try field(image, at: bat + 4, width: 4) == 0xFFFF_FFFF)
    _ = try [UInt8](repeating: 0x52, count: 4096).withUnsafeBytes { try disk.chain.write($0, at: 4096) }
    let before = disk.source.stages.count
    try disk.chain.flush()
    let flush = Array(disk.source.stages.dropFirst(before))
    #expect(flush.map(\.kind) == [.sync, .write, .sync], "\(flush)")
    if flush.count == 3 { #expect(flush[1].offset == bat) }
    #expect(try field(image, at: bat + 4, width: 4) == (end - 512) / 512)
    let after = disk.source.stages.count
    try disk.chain.flush()
    #expect(disk.source.stages.count == after + 1)
  }
}
