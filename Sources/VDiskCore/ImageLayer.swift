/// Where a run of guest bytes lives in one layer. Drivers answer with a `Mapping`; the engine
/// (`LayerChain`) does all reading.
public enum Mapping: Sendable, Equatable {
  /// Stored raw in the extent's file at `hostOffset` (the run is contiguous in that file).
  case data(hostOffset: UInt64)
  /// Reads as zeros in this layer (zero cluster, discarded, sparse), whatever the backing holds.
  case zero
  /// Not in this layer: the backing layer answers (zeros at the bottom of the chain).
  case unallocated
  /// Stored compressed; only the layer's `decode` can produce the bytes.
  case compressed(CompressedDescriptor)
}

/// A compressed unit (a qcow2 compressed cluster, a VMDK grain) as its driver describes it.
public struct CompressedDescriptor: Sendable, Hashable {
  /// Where the compressed bytes start in the layer's file.
  public var hostOffset: UInt64
  /// How many bytes of compressed input may be read from `hostOffset` (an upper bound; input
  /// past end-of-file reads as zeros).
  public var compressedLength: Int
  /// Guest offset of the first byte the unit decompresses to.
  public var guestOffset: UInt64
  /// Number of guest bytes the unit decompresses to.
  public var decompressedLength: Int

  public init(hostOffset: UInt64, compressedLength: Int, guestOffset: UInt64, decompressedLength: Int) {
    self.hostOffset = hostOffset
    self.compressedLength = compressedLength
    self.guestOffset = guestOffset
    self.decompressedLength = decompressedLength
  }
}

/// What one layer says about the guest bytes `[offset, offset + length)`.
public struct Extent: Sendable {
  public var offset: UInt64
  public var length: UInt64
  public var mapping: Mapping
  /// The file `.data` and `.compressed` bytes live in (the layer's own file, or an extent or
  /// external data file). For `.zero` and `.unallocated` it is the layer's file, unused.
  public var file: ImageFile

  public init(offset: UInt64, length: UInt64, mapping: Mapping, file: ImageFile) {
    self.offset = offset
    self.length = length
    self.mapping = mapping
    self.file = file
  }
}

/// One image file of a chain, as its format driver sees it.
///
/// Contract of `extent(at:maxLength:)` (modelled on QEMU's `qcow2_get_host_offset`): on entry
/// `offset < virtualSize` and `1 <= maxLength <= virtualSize - offset`. On return the extent
/// starts at `offset` and covers the longest run, at most `maxLength` bytes and at least one byte,
/// whose bytes all have the same kind of mapping and (for `.data`) are contiguous in one host
/// file. A driver may return less than the longest run (e.g. stop at a table boundary) but never
/// zero bytes. A driver throws `VDiskError` when its metadata is inconsistent; it never traps on
/// image bytes. A driver never performs data I/O here and never consults its backing layer.
public protocol ImageLayer: AnyObject, Sendable {
  /// Short format name as `qemu-img info` prints it (`qcow2`, `raw`).
  var formatName: String { get }
  /// The layer's main file (its header lives there).
  var file: ImageFile { get }
  var virtualSize: UInt64 { get }
  /// The layer below this one, or nil at the bottom of the chain.
  var backing: (any ImageLayer)? { get }

  func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent

  /// Decompresses the unit `descriptor` and copies `buffer.count` of its bytes, starting
  /// `skipping` bytes into the unit, into `buffer`.
  func decode(_ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int)
    throws

  /// Like `extent(at:maxLength:)`, but may look harder at the host file to report holes as
  /// `.zero` (a raw layer asks the file system with SEEK_DATA/SEEK_HOLE). Used for allocation
  /// maps, SEEK_DATA/SEEK_HOLE and `st_blocks`, never for reading.
  func allocationExtent(at offset: UInt64, maxLength: UInt64) throws -> Extent

  /// What `vdiskfs info` shows about this layer alone.
  var info: ImageInfo { get }

  /// The host file whose bytes are this layer's guest bytes one for one — guest offset = file
  /// offset, the file exactly `virtualSize` bytes long — so that the kernel may read (and, when
  /// `writable`, write) it directly for a FUSE file (passthrough). nil (the default) unless the
  /// driver can vouch for that for the life of the mount: the kernel then reads and writes the
  /// whole file with no bound at `virtualSize` (a write past the end grows the file), and the
  /// driver sees none of it. Only a layer without a backing layer is ever asked.
  func passthroughFile(writable: Bool) -> ImageFile?
}

extension ImageLayer {
  public func decode(
    _ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int
  ) throws {
    throw VDiskError.unsupported(file.path, "\(formatName) has no compressed data")
  }

  public func allocationExtent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    try extent(at: offset, maxLength: maxLength)
  }

  public func passthroughFile(writable: Bool) -> ImageFile? { nil }

  /// The chain from this layer down, this layer first.
  public var chain: [any ImageLayer] {
    var layers: [any ImageLayer] = [self]
    while let next = layers[layers.count - 1].backing { layers.append(next) }
    return layers
  }
}

/// A layer whose bytes live in more files than its `file` (a Parallels bundle's images):
/// `vdiskfs info` counts them all in its disk size, as qemu-img counts a VMDK's extents.
public protocol FileSetLayer: ImageLayer {
  /// Every file the layer reads, its `file` first, each once.
  var files: [ImageFile] { get }
}
