import VDiskCore

/// The 512-byte header of a hosted sparse extent, magic "KDMV" (vmdk spec, "The VMDK sparse
/// extent data file", "File header"), validated against the file it came from. For a
/// stream-optimized extent whose header says GD_AT_END, the values are the footer's.
public struct SparseExtentHeader: Sendable {
  public static let magic: [UInt8] = Array("KDMV".utf8)
  public static let size = 512
  /// "Valid new line detection test" (vmdk spec, "Flags").
  static let flagNewlineTest: UInt32 = 0x1
  /// "Use zeroed-grain table entry": a GT entry of 1 means the grain reads as zeros.
  static let flagZeroedGrain: UInt32 = 0x4
  /// "Has compressed grain data".
  static let flagCompressed: UInt32 = 0x1_0000
  /// "Has metadata": markers precede compressed grains and metadata (stream-optimized).
  static let flagMarkers: UInt32 = 0x2_0000
  /// "If the grain directory sector number value is -1 (0xffffffffffffffff) (GD_AT_END) …
  /// there should be a secondary file header stored at offset -1024 relative from the end of
  /// the file" (vmdk spec, "File header").
  static let gdAtEnd = UInt64.max
  /// QEMU's bound on the grain size (0x200000 sectors, 1 GiB).
  static let maxGrainSectors: UInt64 = 0x20_0000
  /// Compressed grains are inflated into memory whole: keep them small (VMware uses 64 KiB).
  static let maxCompressedGrainSectors: UInt64 = 2048
  /// QEMU refuses more than 512 grain table entries ("L2 table size too big").
  static let maxGTEsPerGT: UInt32 = 512
  /// Grain directory entries kept in memory (4 bytes each).
  static let maxGDEntries: UInt64 = 1 << 24

  public var version: UInt32
  public var flags: UInt32
  /// Sectors the extent covers.
  public var capacity: UInt64
  /// Sectors per grain (a power of two).
  public var grainSectors: UInt64
  public var descriptorOffset: UInt64
  public var descriptorSectors: UInt64
  public var gtesPerGT: UInt32
  public var redundantGDOffset: UInt64
  /// Sector of the grain directory in use (the footer's for GD_AT_END).
  public var gdOffset: UInt64
  public var isDirty: Bool
  /// `compressAlgorithm` 1: grains are zlib streams (deflate with a zlib header).
  public var isCompressed: Bool
  /// Whether the footer supplied these values (header said GD_AT_END).
  public var fromFooter: Bool

  public var hasMarkers: Bool { flags & Self.flagMarkers != 0 }
  public var usesZeroedGrains: Bool { flags & Self.flagZeroedGrain != 0 }
  public var grainSize: UInt64 { grainSectors * 512 }
  /// Grain directory entries: capacity / (GTEs per GT × grain size), rounded up (vmdk spec,
  /// "Grain directory").
  public var gdEntries: UInt64 {
    let coverage = UInt64(gtesPerGT) * grainSectors
    return (capacity + coverage - 1) / coverage
  }

  /// Reads and validates the header of `file` (and its footer when the header says GD_AT_END).
  public init(file: ImageFile) throws {
    let bytes = try file.readBytes(at: 0, count: Self.size, what: "sparse extent header")
    try self.init(bytes: bytes, file: file, at: 0)
    if gdOffset == Self.gdAtEnd {
      try self.init(footerOf: file)
    }
    try validateAgainst(file)
  }

  /// Decodes the fields of a header (or footer) at `offset`; checks magic, version and geometry.
  init(bytes: [UInt8], file: ImageFile, at offset: UInt64) throws {
    let path = file.path
    let r = ByteReader(bytes, path: path, baseOffset: offset)
    guard Array(try r.bytes(0, count: 4)) == Self.magic else {
      throw VDiskError.corrupt(path, at: offset, "no sparse extent magic \"KDMV\" at \(hex(offset))")
    }
    version = try r.u32le(4)
    guard (1...3).contains(version) else {
      throw VDiskError.unsupported(path, "sparse extent version \(version) (only 1 to 3 are known)")
    }
    flags = try r.u32le(8)
    capacity = try r.u64le(12)
    grainSectors = try r.u64le(20)
    descriptorOffset = try r.u64le(28)
    descriptorSectors = try r.u64le(36)
    gtesPerGT = try r.u32le(44)
    redundantGDOffset = try r.u64le(48)
    gdOffset = try r.u64le(56)
    isDirty = try r.u8(72) != 0
    fromFooter = false
    if flags & Self.flagNewlineTest != 0 {
      // "The end of line characters are used to detect corruption due to file transfers that
      // alter line end characters."
      guard Array(try r.bytes(73, count: 4)) == [0x0a, 0x20, 0x0d, 0x0a] else {
        throw VDiskError.corrupt(
          path, at: offset + 73,
          "sparse extent header's newline test bytes are damaged (was the file transferred as text?)")
      }
    }
    let algorithm = try r.u16le(77)
    guard algorithm <= 1 else {
      throw VDiskError.unsupported(
        path, "sparse extent compression method \(algorithm) (only deflate is known)")
    }
    isCompressed = algorithm == 1
    guard capacity <= VMDKDescriptor.maxVirtualSize / 512 else {
      throw VDiskError.corrupt(
        path, at: offset + 12, "sparse extent capacity of \(capacity) sectors is absurd")
    }
    guard grainSectors > 0, grainSectors <= Self.maxGrainSectors, grainSectors & (grainSectors - 1) == 0
    else {
      throw VDiskError.corrupt(
        path, at: offset + 20,
        "grain size of \(grainSectors) sectors is not a power of two between 1 and \(Self.maxGrainSectors)")
    }
    if isCompressed, grainSectors > Self.maxCompressedGrainSectors {
      throw VDiskError.unsupported(
        path, "compressed grains of \(grainSectors) sectors (at most \(Self.maxCompressedGrainSectors))")
    }
    guard gtesPerGT > 0, gtesPerGT <= Self.maxGTEsPerGT else {
      throw VDiskError.corrupt(
        path, at: offset + 44, "\(gtesPerGT) grain table entries per grain table (1 to \(Self.maxGTEsPerGT))")
    }
  }

  /// The footer of a stream-optimized extent: footer marker at EOF-1536, footer (a copy of the
  /// header with the real GD offset) at EOF-1024, end-of-stream marker at EOF-512 (vmdk spec,
  /// "Footer": "they together make up the last two sectors of the disk").
  init(footerOf file: ImageFile) throws {
    let path = file.path
    guard file.size >= 1536 + 512 else {
      throw VDiskError.corrupt(path, "header says GD_AT_END but the file is too short for a footer")
    }
    let start = file.size - 1536
    let bytes = try file.readBytes(at: start, count: 1536, what: "stream-optimized footer")
    let markers = ByteReader(bytes, path: path, baseOffset: start)
    let footerMarker = try StreamMarker(markers, at: 0)
    let eos = try StreamMarker(markers, at: 1024)
    guard footerMarker.isMetadata(.footer), eos.isMetadata(.endOfStream) else {
      throw VDiskError.corrupt(
        path, at: start,
        "header says GD_AT_END but the file does not end with a footer marker, footer and end-of-stream marker"
      )
    }
    try self.init(bytes: Array(bytes[512..<1024]), file: file, at: start + 512)
    fromFooter = true
    guard gdOffset != Self.gdAtEnd else {
      throw VDiskError.corrupt(
        path, at: start + 512 + 56, "the footer's grain directory offset is GD_AT_END too")
    }
  }

  /// Checks the grain directory and embedded descriptor lie within `file`.
  func validateAgainst(_ file: ImageFile) throws {
    let path = file.path
    let entries = gdEntries
    guard entries <= Self.maxGDEntries else {
      throw VDiskError.corrupt(path, "grain directory of \(entries) entries is too large")
    }
    if entries > 0 {
      guard gdOffset > 0, gdOffset <= file.size / 512, gdOffset * 512 + entries * 4 <= file.size else {
        throw VDiskError.corrupt(
          path, at: 56,
          "grain directory at sector \(gdOffset) (\(entries) entries) lies outside the file (size \(hex(file.size)))"
        )
      }
    }
    if descriptorSectors > 0 {
      guard descriptorSectors <= UInt64(VMDKDescriptor.maxSize / 512) else {
        throw VDiskError.corrupt(
          path, at: 36, "embedded descriptor of \(descriptorSectors) sectors is larger than 1 MiB")
      }
      guard descriptorOffset > 0, descriptorOffset <= file.size / 512,
        (descriptorOffset + descriptorSectors) * 512 <= file.size
      else {
        throw VDiskError.corrupt(
          path, at: 28, "embedded descriptor at sector \(descriptorOffset) lies outside the file")
      }
    }
  }

  /// The embedded descriptor's bytes, or nil when the extent has none.
  func embeddedDescriptor(_ file: ImageFile) throws -> [UInt8]? {
    guard descriptorSectors > 0 else { return nil }
    return try file.readBytes(
      at: descriptorOffset * 512, count: Int(descriptorSectors * 512), what: "embedded descriptor")
  }
}
