import Foundation
import VDiskCore

/// Builds a VHDX file from scratch, per vhdx-notes: header section (identifier, two headers,
/// two region tables), a 1 MiB log at 1 MiB, metadata at 2 MiB, the BAT at 3 MiB, then payload
/// and sector-bitmap blocks. Also models what the guest should read.
public struct VHDXBuilder: Sendable {
  public enum Block: Sendable {
    case full(UInt8)
    /// `byte` in the present sectors (indices within the block); the rest from the parent.
    case partial(UInt8, [Range<Int>])
    case state(UInt64)
  }

  public var virtualSize: UInt64
  public var blockSize: UInt64 = 1 << 20
  public var logicalSectorSize: UInt64 = 512
  public var physicalSectorSize: UInt64 = 4096
  public var dataWriteGuid = randomGUID()
  public var logGuid = GUID.zero
  /// Parent locator key/value pairs; non-nil makes a differencing disk.
  public var locator: [(String, String)]?
  public var blocks: [UInt64: Block] = [:]

  public init(virtualSize: UInt64) {
    self.virtualSize = virtualSize
  }

  /// A differencing child (HasParent) of the parent whose DataWriteGuid is `parentLinkage`,
  /// found by `relativePath` (vhdx-notes, "Metadata region": the parent locator item).
  public static func differencing(
    virtualSize: UInt64, parentLinkage: GUID, relativePath: String = ".\\base.vhdx"
  ) -> VHDXBuilder {
    var builder = VHDXBuilder(virtualSize: virtualSize)
    builder.locator = [
      ("parent_linkage", "{\(parentLinkage)}"), ("relative_path", relativePath),
      ("absolute_win32_path", "C:\\nowhere\\base.vhdx"),
    ]
    return builder
  }

  public static let logOffset: UInt64 = 1 << 20
  public static let metadataOffset: UInt64 = 2 << 20
  public static let batOffset: UInt64 = 3 << 20

  public var chunkRatio: UInt64 { (1 << 23) * logicalSectorSize / blockSize }
  public var dataBlocks: UInt64 { (virtualSize + blockSize - 1) / blockSize }
  public var batEntries: UInt64 {
    let chunks = (dataBlocks + chunkRatio - 1) / chunkRatio
    return locator != nil ? chunks * (chunkRatio + 1) : dataBlocks + (dataBlocks - 1) / chunkRatio
  }
  public var batLength: UInt64 { (batEntries * 8 + (1 << 20) - 1) / (1 << 20) * (1 << 20) }

  /// Writes the image; returns the file offsets of each allocated payload block.
  @discardableResult
  public func write(to path: String) throws -> [UInt64: UInt64] {
    var file: [(UInt64, [UInt8])] = []
    var identifier = [UInt8](repeating: 0, count: 4096)
    identifier.replaceSubrange(0..<8, with: Array("vhdxfile".utf8))
    _ = identifier.storeUTF16("vdiskfs tests", at: 8)
    file.append((0, identifier))
    for (slot, offset) in [(1, UInt64(64 << 10)), (2, UInt64(128 << 10))] {
      var h = [UInt8](repeating: 0, count: 4096)
      h.replaceSubrange(0..<4, with: Array("head".utf8))
      h.storeLE(UInt64(slot), at: 8, width: 8)
      h.storeGUID(randomGUID(), at: 16)
      h.storeGUID(dataWriteGuid, at: 32)
      h.storeGUID(logGuid, at: 48)
      h.storeLE(1, at: 66, width: 2)
      h.storeLE(1 << 20, at: 68, width: 4)
      h.storeLE(Self.logOffset, at: 72, width: 8)
      h.sealVHDXChecksum()
      file.append((offset, h))
    }
    var regions = [UInt8](repeating: 0, count: 64 << 10)
    regions.replaceSubrange(0..<4, with: Array("regi".utf8))
    regions.storeLE(2, at: 8, width: 4)
    regions.storeGUID(GUID("2DC27766-F623-4200-9D64-115E9BFD4A08") ?? .zero, at: 16)
    regions.storeLE(Self.batOffset, at: 32, width: 8)
    regions.storeLE(batLength, at: 40, width: 4)
    regions.storeLE(1, at: 44, width: 4)
    regions.storeGUID(GUID("8B7CA206-4790-4B9A-B8FE-575F050F886E") ?? .zero, at: 48)
    regions.storeLE(Self.metadataOffset, at: 64, width: 8)
    regions.storeLE(1 << 20, at: 72, width: 4)
    regions.storeLE(1, at: 76, width: 4)
    regions.sealVHDXChecksum()
    file.append((192 << 10, regions))
    file.append((256 << 10, regions))
    file.append((Self.metadataOffset, metadataRegion()))

    // Payload blocks and sector bitmaps after the BAT.
    var next = Self.batOffset + batLength
    var bat = [UInt8](repeating: 0, count: Int(batEntries * 8))
    var bitmaps: [UInt64: [UInt8]] = [:]
    var hosts: [UInt64: UInt64] = [:]
    for (block, content) in blocks.sorted(by: { $0.key < $1.key }) {
      let index = Int(block + block / chunkRatio)
      switch content {
      case .state(let entry):
        bat.storeLE(entry, at: index * 8, width: 8)
      case .full(let byte):
        hosts[block] = next
        file.append((next, [UInt8](repeating: byte, count: Int(blockSize))))
        bat.storeLE(next | 6, at: index * 8, width: 8)
        next += blockSize
      case .partial(let byte, let ranges):
        hosts[block] = next
        // Absent sectors hold garbage that must never be shown.
        var data = [UInt8](repeating: 0xEE, count: Int(blockSize))
        let chunk = block / chunkRatio
        var bits = bitmaps[chunk] ?? [UInt8](repeating: 0, count: 1 << 20)
        let firstSector = Int((block % chunkRatio) * (blockSize / logicalSectorSize))
        for range in ranges {
          for s in range {
            let start = s * Int(logicalSectorSize)
            data.replaceSubrange(
              start..<start + Int(logicalSectorSize), with: repeatElement(byte, count: Int(logicalSectorSize))
            )
            bits[(firstSector + s) / 8] |= 1 << UInt8((firstSector + s) % 8)
          }
        }
        bitmaps[chunk] = bits
        file.append((next, data))
        bat.storeLE(next | 7, at: index * 8, width: 8)
        next += blockSize
      }
    }
    for (chunk, bits) in bitmaps.sorted(by: { $0.key < $1.key }) {
      file.append((next, bits))
      let index = Int(chunk * (chunkRatio + 1) + chunkRatio)
      bat.storeLE(next | 6, at: index * 8, width: 8)
      next += 1 << 20
    }
    file.append((Self.batOffset, bat))

    _ = FileManager.default.createFile(atPath: path, contents: nil)
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    try handle.truncate(atOffset: next)
    for (offset, bytes) in file {
      try handle.seek(toOffset: offset)
      try handle.write(contentsOf: Data(bytes))
    }
    FuzzSeeds.keep(path, target: "FuzzVHDX")
    return hosts
  }

  public func metadataRegion() -> [UInt8] {
    var region = [UInt8](repeating: 0, count: 1 << 20)
    region.replaceSubrange(0..<8, with: Array("metadata".utf8))
    var items: [(String, [UInt8], UInt32)] = []
    func le(_ v: UInt64, _ width: Int) -> [UInt8] {
      var b = [UInt8](repeating: 0, count: width)
      b.storeLE(v, at: 0, width: width)
      return b
    }
    // IsRequired (4) on all system items; IsVirtualDisk (2) on the disk's own properties.
    items.append(
      ("CAA16737-FA36-4D43-B3B6-33F0AA44E76B", le(blockSize, 4) + le(locator != nil ? 2 : 0, 4), 4))
    items.append(("2FA54224-CD1B-4876-B211-5DBED83BF4B8", le(virtualSize, 8), 6))
    items.append(("BECA12AB-B2E6-4523-93EF-C309E000C746", randomGUID().bytes, 6))
    items.append(("8141BF1D-A96F-4709-BA47-F233A8FAAB5F", le(logicalSectorSize, 4), 6))
    items.append(("CDA348C7-445D-4471-9CC9-E9885251C556", le(physicalSectorSize, 4), 6))
    if let locator {
      items.append(("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C", Self.locatorItem(locator), 4))
    }
    region.storeLE(UInt64(items.count), at: 10, width: 2)
    var dataOffset = 64 << 10
    for (i, item) in items.enumerated() {
      let at = 32 + 32 * i
      region.storeGUID(GUID(item.0) ?? .zero, at: at)
      region.storeLE(UInt64(dataOffset), at: at + 16, width: 4)
      region.storeLE(UInt64(item.1.count), at: at + 20, width: 4)
      region.storeLE(UInt64(item.2), at: at + 24, width: 4)
      region.replaceSubrange(dataOffset..<dataOffset + item.1.count, with: item.1)
      dataOffset += (item.1.count + 7) / 8 * 8
    }
    return region
  }

  public static func locatorItem(_ pairs: [(String, String)]) -> [UInt8] {
    var item = [UInt8](repeating: 0, count: 20 + 12 * pairs.count + 4096)
    item.storeGUID(GUID("B04AEFB7-D19E-4A81-B789-25B8E9445913") ?? .zero, at: 0)
    item.storeLE(UInt64(pairs.count), at: 18, width: 2)
    var strings = 20 + 12 * pairs.count
    for (i, (key, value)) in pairs.enumerated() {
      let at = 20 + 12 * i
      let keyLength = item.storeUTF16(key, at: strings)
      item.storeLE(UInt64(strings), at: at, width: 4)
      item.storeLE(UInt64(keyLength), at: at + 8, width: 2)
      strings += keyLength
      let valueLength = item.storeUTF16(value, at: strings)
      item.storeLE(UInt64(strings), at: at + 4, width: 4)
      item.storeLE(UInt64(valueLength), at: at + 10, width: 2)
      strings += valueLength
    }
    return Array(item[0..<strings])
  }

  /// What the guest reads: `parent` (zeros when nil, or past its end) under this image's blocks.
  public func expected(over parent: [UInt8]?) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: Int(virtualSize))
    if let parent {
      let n = min(parent.count, out.count)
      out.replaceSubrange(0..<n, with: parent[0..<n])
    }
    for (block, content) in blocks {
      let start = Int(block * blockSize)
      let end = min(start + Int(blockSize), out.count)
      switch content {
      case .full(let byte):
        out.replaceSubrange(start..<end, with: repeatElement(byte, count: end - start))
      case .partial(let byte, let ranges):
        for range in ranges {
          let s = start + range.lowerBound * Int(logicalSectorSize)
          let e = min(start + range.upperBound * Int(logicalSectorSize), end)
          out.replaceSubrange(s..<e, with: repeatElement(byte, count: e - s))
        }
      case .state(let entry):
        let state = entry & 7
        if state != 0 || locator == nil {
          out.replaceSubrange(start..<end, with: repeatElement(0, count: end - start))
        }
      }
    }
    return out
  }
}

/// Little-endian field writers for the structures above (file-private: the test targets keep
/// their own helpers).
extension Array where Element == UInt8 {
  fileprivate mutating func storeLE(_ value: UInt64, at offset: Int, width: Int) {
    for i in 0..<width { self[offset + i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * i)) }
  }

  fileprivate mutating func storeGUID(_ guid: GUID, at offset: Int) {
    replaceSubrange(offset..<offset + 16, with: guid.bytes)
  }

  /// Stores `text` as UTF-16LE; returns its length in bytes.
  fileprivate mutating func storeUTF16(_ text: String, at offset: Int) -> Int {
    var at = offset
    for unit in text.utf16 {
      storeLE(UInt64(unit), at: at, width: 2)
      at += 2
    }
    return at - offset
  }

  /// Stores the CRC-32C of the structure, its checksum field read as zero, at byte 4
  /// (vhdx-notes, "Checksums").
  fileprivate mutating func sealVHDXChecksum() {
    storeLE(0, at: 4, width: 4)
    storeLE(UInt64(ReflectedCRC32.castagnoli.checksum(self)), at: 4, width: 4)
  }
}

private func randomGUID() -> GUID {
  var generator = SystemRandomNumberGenerator()
  return GUID(onDisk: (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }[...])
}
