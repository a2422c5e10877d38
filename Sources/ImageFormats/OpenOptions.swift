import RemoteStore
import VDiskCore

/// What to open and how (`--format`, `--cache-size`, whether to open backing files and where
/// they may lie).
public struct OpenOptions: Sendable {
  /// `--format`; nil = probe.
  public var format: (any FormatDriver.Type)?
  /// `--cache-size` in bytes; nil = the default (what covers the chain, at most 32 MiB).
  public var cacheSize: Int?
  /// false: the top layer only (for `vdiskfs info` without `--backing-chain`, `-o nobacking`);
  /// what the top does not hold reads as zeros.
  public var openBacking: Bool = true
  /// `-o backing_dir=DIR`: every backing file and extent file must resolve inside DIR.
  public var backingDirectory: String?
  /// The most metadata the whole chain may hold in memory outside its cache
  /// (`LayerPlan.residentBytes`); tests lower it.
  public var residentMetadataLimit: UInt64 = ImageOpener.maxResidentMetadata
  /// Open the top layer for writing (backing layers are always read-only).
  public var writable: Bool = false
  /// Take QEMU's image locks (writer on a writable top, reader elsewhere). false is
  /// `force_share`: no locks, for looking at an image someone else has open (read-only only).
  public var lock: Bool = false
  /// The formats probing and format names resolve against (tests may add their own).
  public var registry: FormatRegistry = .standard
  /// The stores remote locations (`rbd:`, `s3://`, `https://`) open from (the CLI passes
  /// `StoreRegistry.standard`; `.none` opens local files only), and how.
  public var stores: StoreRegistry = .none
  public var remote = RemoteOptions()
  /// `-o remote_backing`: a local image may name a backing file in a remote store (`s3://…`).
  /// Off by default: an untrusted image must not make vdiskfs reach out to the network. Names
  /// inside a remote image always resolve in its own store.
  public var allowRemoteBacking = false

  public init(
    format: (any FormatDriver.Type)? = nil, cacheSize: Int? = nil, openBacking: Bool = true,
    writable: Bool = false, lock: Bool = false, registry: FormatRegistry = .standard,
    backingDirectory: String? = nil
  ) {
    self.backingDirectory = backingDirectory
    self.format = format
    self.cacheSize = cacheSize
    self.openBacking = openBacking
    self.writable = writable
    self.lock = lock
    self.registry = registry
  }
}
