/// Key of a metadata table in a cache shared by a whole chain: which file, and where in it.
public struct TableKey: Hashable, Sendable {
  public var file: UInt64
  public var offset: UInt64
  /// Which kind of table (a driver's own numbering): a hostile image may put two kinds of table
  /// at one offset, and a lookup must never get back a table of another kind (or size).
  public var kind: UInt8
  public init(file: ImageFile, offset: UInt64, kind: UInt8 = 0) {
    self.file = file.id
    self.offset = offset
    self.kind = kind
  }

  /// One word into the hasher instead of three (a lookup on every read hashes a key); keys that
  /// mix to the same word still differ under `==`.
  @inlinable
  public func hash(into hasher: inout Hasher) {
    hasher.combine(offset ^ (file &* 0x9E37_79B9_7F4A_7C15) ^ UInt64(kind) << 56)
  }
}

/// The chain-wide cache of decoded metadata tables (qcow2 L2 tables as 64-bit words, grain
/// tables, BAT pages), sized by `--cache-size`. One instance is shared by every layer of a chain.
public typealias MetadataCache = TableCache<TableKey, [UInt64]>

/// QEMU's default L2 cache ceiling on Linux, and ours.
public let defaultMetadataCacheCeiling = 32 << 20
