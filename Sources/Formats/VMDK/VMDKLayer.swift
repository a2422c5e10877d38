import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// Where one extent keeps its bytes.
enum ExtentStore: Sendable {
  /// FLAT / VMFS: raw bytes in `file` from byte `start`.
  case flat(file: ImageFile, start: UInt64)
  /// ZERO: no file.
  case zero
  /// SPARSE (KDMV, possibly compressed) or VMFSSPARSE (COWD).
  case sparse(GrainDirectory)
  case seSparse(SESparseExtent)
}

/// One extent of the disk: consecutive guest ranges map to consecutive extents (vmdk spec,
/// "Extent descriptions").
struct VMDKExtent: Sendable {
  /// First guest byte of the extent.
  var start: UInt64
  var length: UInt64
  var store: ExtentStore
  /// For `info`: the name the descriptor records, and the extent type.
  var fileName: String
  var type: String

  var file: ImageFile? {
    switch store {
    case .flat(let file, _): file
    case .zero: nil
    case .sparse(let gd): gd.file
    case .seSparse(let se): se.file
    }
  }

  var grainSize: UInt64? {
    switch store {
    case .sparse(let gd): gd.grainSize
    case .seSparse: SESparseExtent.grainSize
    case .flat, .zero: nil
    }
  }

  var isCompressed: Bool {
    if case .sparse(let gd) = store { return gd.compressed }
    return false
  }
}

/// A VMDK disk (descriptor plus extents, or a sparse extent opened directly) as one layer of a
/// chain: it says where guest bytes live and inflates compressed grains. Opened read-write, it
/// also takes writes (`VMDKLayer+Write.swift`, through its `VMDKWriter`).
public final class VMDKLayer: ImageLayer {
  public let file: ImageFile
  public let backing: (any ImageLayer)?
  public let virtualSize: UInt64
  /// The descriptor's content identifier; a child's parentCID must equal it.
  public let cid: UInt32?
  public let parentCID: UInt32
  public let createType: String
  public let parentFileNameHint: String?
  public let isDirty: Bool
  let extents: [VMDKExtent]
  let grains: CompressedGrains?
  /// The write side, when the layer was opened read-write.
  let writer: VMDKWriter?

  public var formatName: String { "vmdk" }

  init(
    file: ImageFile, descriptor: VMDKDescriptor, extents: [VMDKExtent], backing: (any ImageLayer)?,
    isDirty: Bool, writer: VMDKWriter? = nil
  ) {
    self.writer = writer
    self.file = file
    self.backing = backing
    self.extents = extents
    self.cid = descriptor.cid
    self.parentCID = descriptor.parentCID
    self.createType = descriptor.createType
    self.parentFileNameHint = descriptor.hasParent ? descriptor.parentFileNameHint : nil
    self.isDirty = isDirty
    virtualSize = extents.last.map { $0.start + $0.length } ?? 0
    let compressedGrain = extents.compactMap { $0.isCompressed ? $0.grainSize : nil }.max()
    grains = compressedGrain.map { CompressedGrains(grainSize: Int($0)) }
  }

  /// A monolithicFlat disk (one FLAT/VMFS extent at offset 0 of its file, covering the whole disk
  /// and the whole file) read-only: its flat file is the disk byte for byte. Never for writing:
  /// the disk's size is the descriptor's, and a passthrough write past its end would grow the
  /// flat file without it.
  public func passthroughFile(writable: Bool) -> ImageFile? {
    guard !writable, backing == nil, extents.count == 1, let only = extents.first,
      case .flat(let data, let start) = only.store, start == 0, only.start == 0,
      only.length == virtualSize, data.size == virtualSize, data.descriptor != nil
    else { return nil }
    return data
  }

  /// How many grains were actually inflated (decompressed-grain cache misses).
  public var decompressionCount: Int { grains?.decompressionCount ?? 0 }

  /// Index of the extent holding guest byte `offset` (< virtualSize).
  private func extentIndex(_ offset: UInt64) -> Int {
    extents.lastIndex(startingAtOrBefore: offset) { $0.start }
  }

  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    guard offset < virtualSize, !extents.isEmpty else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: offset, "offset \(hex(offset)) is past the disk")
    }
    let e = extents[extentIndex(offset)]
    let within = offset - e.start
    let limit = min(maxLength, e.length - within)
    switch e.store {
    case .zero:
      return Extent(offset: offset, length: limit, mapping: .zero, file: file)
    case .flat(let data, let start):
      return Extent(offset: offset, length: limit, mapping: .data(hostOffset: start + within), file: data)
    case .sparse(let gd):
      let run = try gd.run(at: within, maxLength: limit)
      return try extent(offset, run, in: e, file: gd.file)
    case .seSparse(let se):
      let run = try se.run(at: within, maxLength: limit)
      return try extent(offset, run, in: e, file: se.file)
    }
  }

  private func extent(
    _ offset: UInt64, _ run: (length: UInt64, piece: GrainPiece), in e: VMDKExtent, file: ImageFile
  )
    throws -> Extent
  {
    let mapping: Mapping
    switch run.piece {
    case .unallocated: mapping = .unallocated
    case .zero: mapping = .zero
    case .data(let host): mapping = .data(hostOffset: host)
    case .compressed(let host):
      guard let grains, let grainSize = e.grainSize else {
        throw VDiskError.corrupt(file.path, "compressed grain in an extent without compression")
      }
      let grainStart = (offset - e.start) / grainSize * grainSize
      mapping = .compressed(
        CompressedDescriptor(
          hostOffset: host, compressedLength: grains.maxStoredLength, guestOffset: e.start + grainStart,
          decompressedLength: Int(min(grainSize, e.length - grainStart))))
    }
    return Extent(offset: offset, length: run.length, mapping: mapping, file: file)
  }

  public func decode(
    _ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int
  )
    throws
  {
    // The descriptor does not say which extent file holds the grain; its guest offset does.
    guard let grains, descriptor.guestOffset < virtualSize,
      case .sparse(let gd) = extents[extentIndex(descriptor.guestOffset)].store, gd.compressed
    else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: descriptor.hostOffset, "no compressed grain at this offset"
      )
    }
    try grains.decode(descriptor, file: gd.file, markers: gd.hasMarkers, into: buffer, skipping: skipping)
  }

  /// Flat extents ask the file system for holes (SEEK_DATA/SEEK_HOLE), as a raw layer does.
  public func allocationExtent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    let answer = try extent(at: offset, maxLength: maxLength)
    guard case .data(let host) = answer.mapping,
      case .flat = extents[extentIndex(offset)].store,
      host <= UInt64(Int64.max)
    else { return answer }
    switch answer.file.allocation(at: host) {
    case .hole(let end):
      return Extent(offset: offset, length: min(answer.length, end - host), mapping: .zero, file: file)
    case .data(let end):
      return Extent(
        offset: offset, length: min(answer.length, end - host), mapping: answer.mapping, file: answer.file)
    case nil:
      return answer
    }
  }

  public var info: ImageInfo {
    var fullBacking: String?
    if let hint = parentFileNameHint { fullBacking = PlanContext.resolve(hint, relativeTo: file.path) }
    var specific: [InfoField] = []
    if let cid = writer?.newCID.withLock({ $0 }) ?? cid {
      specific.append(InfoField("cid", .integer(Int64(cid))))
    }
    specific.append(InfoField("parent-cid", .integer(Int64(parentCID))))
    specific.append(InfoField("create-type", .string(createType)))
    let list: [InfoValue] = extents.map { e in
      var fields = [
        InfoField("filename", .string(e.fileName)), InfoField("format", .string(e.type)),
        InfoField("virtual-size", .integer(Int64(e.length))),
      ]
      if let grain = e.grainSize { fields.append(InfoField("cluster-size", .integer(Int64(grain)))) }
      if e.isCompressed { fields.append(InfoField("compressed", .bool(true))) }
      return .object(fields)
    }
    specific.append(InfoField("extents", .array(list)))
    return ImageInfo(
      format: "vmdk", filename: file.path, virtualSize: virtualSize,
      clusterSize: extents.lazy.compactMap(\.grainSize).first, backingFilename: parentFileNameHint,
      fullBackingFilename: fullBacking, backingFormat: parentFileNameHint == nil ? nil : "vmdk",
      dirtyFlag: isDirty, formatSpecific: specific)
  }
}

/// `vdiskfs info`'s disk size counts the descriptor and every extent file, as qemu-img's does
/// (`vmdk_get_allocated_file_size`): a monolithicFlat or split VMDK's bytes live in its extents.
extension VMDKLayer: FileSetLayer {
  public var files: [ImageFile] {
    var seen: Set<String> = [file.path]
    var all = [file]
    for case let extentFile? in extents.map(\.file) where seen.insert(extentFile.path).inserted {
      all.append(extentFile)
    }
    return all
  }
}
