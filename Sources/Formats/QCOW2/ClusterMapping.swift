import VDiskCore

/// The guest-to-host mapping of one qcow2 image: its active L1 table (in memory) and its L2
/// tables (in the chain's shared `MetadataCache`). Answers `extent(at:maxLength:)` questions;
/// never reads guest data.
struct ClusterMapping: Sendable {
  let file: ImageFile
  let decoder: L2EntryDecoder
  let cache: MetadataCache
  /// The L1 entries the virtual size needs (qcow2 spec, "L1 table entry"), as stored; unused
  /// when `activeL1` is set.
  let l1: [UInt64]
  /// A writable layer's L1 table, which its writer changes.
  let activeL1: ActiveL1?
  let clusterBits: UInt32
  /// log2 of the guest bytes one L2 table covers.
  let l2CoverageBits: UInt32
  /// 8 bytes per entry, or 16 with extended L2 entries (qcow2 spec, "Extended L2 Entries").
  let wordsPerEntry: Int

  /// A read-only layer's mapping (its L1 table read now), or a writable one's over its writer's
  /// `activeL1`. L2 tables come from the chain's cache, where the writer keeps its dirty ones.
  init(file: ImageFile, header: QCOW2Header, cache: MetadataCache, activeL1: ActiveL1? = nil) throws {
    // The header checked that these entries lie within the file and within 64 MiB.
    let count = activeL1 == nil ? Int(header.l1EntriesNeeded) : 0
    let l1 = try file.readL1Table(at: header.l1TableOffset, count: count)
    self.init(file: file, header: header, l1: l1, cache: cache, activeL1: activeL1)
  }

  /// A mapping over an L1 table already in memory (`l1`: the entries the virtual size needs, as
  /// stored), such as an internal snapshot's.
  init(file: ImageFile, header: QCOW2Header, l1: [UInt64], cache: MetadataCache, activeL1: ActiveL1? = nil) {
    self.file = file
    self.cache = cache
    self.activeL1 = activeL1
    self.l1 = l1
    clusterBits = header.clusterBits
    l2CoverageBits = header.clusterBits + header.l2Bits
    wordsPerEntry = header.hasExtendedL2 ? 2 : 1
    decoder = L2EntryDecoder(
      path: file.path, version: header.version, clusterBits: header.clusterBits,
      extendedL2: header.hasExtendedL2, hasDataFile: header.hasExternalDataFile)
  }

  var clusterSize: UInt64 { 1 << UInt64(clusterBits) }

  /// The L2 table for L1 index `index`, or nil when the L1 entry is unallocated.
  func l2Table(_ index: Int) throws -> (offset: UInt64, words: [UInt64])? {
    let entry = activeL1?.entry(index) ?? (index < l1.count ? l1[index] : 0)
    let offset = entry & L2EntryDecoder.offsetMask
    guard offset != 0 else { return nil }
    guard offset & (clusterSize - 1) == 0 else {
      throw VDiskError.corrupt(
        file.path, at: offset, "L2 table offset \(hex(offset)) (L1 index \(index)) is not cluster-aligned")
    }
    return (offset, try file.l2Table(at: offset, clusterSize: Int(clusterSize), cache: cache))
  }

  /// Whether subclusters `from…31` all have the same allocation and zero bits (qcow2 spec,
  /// "Subcluster Allocation Bitmap").
  static func restIsUniform(bitmap: UInt64, from subcluster: Int) -> Bool {
    let rest = UInt32.max << UInt32(subcluster)
    let allocated = UInt32(truncatingIfNeeded: bitmap) & rest
    let zeros = UInt32(truncatingIfNeeded: bitmap >> 32) & rest
    return (allocated == 0 || allocated == rest) && (zeros == 0 || zeros == rest)
  }

  /// The longest run from `offset` (at most `maxLength` bytes) with one kind of mapping, host
  /// contiguous for data; compressed runs stop at the end of their cluster. On entry `offset`
  /// lies inside the virtual disk and `maxLength >= 1`; the result covers at least one byte.
  /// Reads no more L2 tables than the run spans.
  func run(at offset: UInt64, maxLength: UInt64) throws -> (length: UInt64, kind: ClusterKind) {
    let end = offset + maxLength
    var position = offset
    var run = RunAccumulator<ClusterKind>()

    let subclusterBits: UInt64 = wordsPerEntry == 2 ? UInt64(clusterBits) - 5 : UInt64(clusterBits)
    let subclusterMask = (UInt64(1) << subclusterBits) - 1
    while position < end {
      let l1Index = Int(position >> UInt64(l2CoverageBits))
      let tableEnd = min(end, (UInt64(l1Index) + 1) << UInt64(l2CoverageBits))
      guard let table = try l2Table(l1Index) else {
        guard run.extend(.unallocated, tableEnd - position) else { break }
        position = tableEnd
        continue
      }
      while position < tableEnd {
        let guestCluster = position & ~(clusterSize - 1)
        let index = Int((position >> UInt64(clusterBits)) & ((1 << UInt64(l2CoverageBits - clusterBits)) - 1))
        let word = index * wordsPerEntry
        guard word + wordsPerEntry <= table.words.count else {
          throw VDiskError.corrupt(file.path, at: table.offset, "L2 index \(index) outside its table")
        }
        let entry = table.words[word]
        let bitmap = wordsPerEntry == 2 ? table.words[word + 1] : 0
        let subcluster = Int((position - guestCluster) >> subclusterBits)
        var kind = try decoder.decode(
          entry: entry, bitmap: bitmap, subcluster: subcluster, guestCluster: guestCluster,
          l2Offset: table.offset, index: index)
        let within = position & subclusterMask
        var pieceEnd = min(tableEnd, (position | subclusterMask) + 1)
        if wordsPerEntry == 2, Self.restIsUniform(bitmap: bitmap, from: subcluster) {
          // The remaining subclusters share one status: take them in one step.
          pieceEnd = min(tableEnd, guestCluster + clusterSize)
        }
        switch kind {
        case .compressed:
          // Compressed clusters have no subclusters: the piece runs to the end of the cluster.
          pieceEnd = min(tableEnd, guestCluster + clusterSize)
          guard let first = run.first else { return (pieceEnd - position, kind) }
          return (run.length, first)
        case .data(let host):
          kind = .data(hostOffset: host + within)
        case .zero, .unallocated:
          break
        }
        guard run.extend(kind, pieceEnd - position) else { return (run.length, run.first ?? kind) }
        position = pieceEnd
      }
    }
    return (run.length, run.first ?? .unallocated)
  }

  /// The answer to `ImageLayer.extent(at:maxLength:)` for a layer with this mapping: the run at
  /// `offset` as an `Extent`, raw data in `dataFile` when the image has one.
  func extent(at offset: UInt64, maxLength: UInt64, dataFile: ImageFile?) throws -> Extent {
    let run = try run(at: offset, maxLength: maxLength)
    let m: Mapping
    var source = file
    switch run.kind {
    case .unallocated:
      m = .unallocated
    case .zero:
      m = .zero
    case .data(let hostOffset):
      m = .data(hostOffset: hostOffset)
      if let dataFile { source = dataFile }
    case .compressed(let hostOffset, let length):
      let cluster = offset & ~(clusterSize - 1)
      m = .compressed(
        CompressedDescriptor(
          hostOffset: hostOffset, compressedLength: length, guestOffset: cluster,
          decompressedLength: Int(clusterSize)))
    }
    return Extent(offset: offset, length: run.length, mapping: m, file: source)
  }

  /// The host cluster the L2 entry of guest `offset` keeps, whatever the cluster reads as: QEMU
  /// reports its offset in `qemu-img map` also for zero clusters that keep their allocation and
  /// for unallocated subclusters of an allocated cluster. Returns the host offset of the byte at
  /// `offset` (nil when the entry names no uncompressed host cluster) and how far that answer
  /// holds: to the end of the cluster, or of the L2 table's coverage when the L1 entry is empty.
  /// On entry `offset` lies inside the virtual disk and `maxLength >= 1`.
  func keptHostCluster(at offset: UInt64, maxLength: UInt64) throws -> (length: UInt64, hostOffset: UInt64?) {
    let l1Index = Int(offset >> UInt64(l2CoverageBits))
    let (end, overflow) = offset.addingReportingOverflow(maxLength)
    let limit = overflow ? UInt64.max : end
    guard let table = try l2Table(l1Index) else {
      return (min(limit, (UInt64(l1Index) + 1) << UInt64(l2CoverageBits)) - offset, nil)
    }
    let guestCluster = offset & ~(clusterSize - 1)
    let length = min(limit, guestCluster + clusterSize) - offset
    let index = Int((offset >> UInt64(clusterBits)) & ((1 << UInt64(l2CoverageBits - clusterBits)) - 1))
    let word = index * wordsPerEntry
    guard word < table.words.count else {
      throw VDiskError.corrupt(file.path, at: table.offset, "L2 index \(index) outside its table")
    }
    let entry = table.words[word]
    guard entry & L2EntryDecoder.compressedFlag == 0 else { return (length, nil) }
    let host = entry & L2EntryDecoder.offsetMask
    guard host != 0 || (decoder.hasDataFile && entry & L2EntryDecoder.copiedFlag != 0) else {
      return (length, nil)
    }
    return (length, host + (offset - guestCluster))
  }
}

extension ImageFile {
  /// Reads an L1 table of `count` entries at `offset` (native order); throws `.corrupt` when it
  /// runs past end-of-file.
  func readL1Table(at offset: UInt64, count: Int, what: String = "L1 table") throws -> [UInt64] {
    try readTable(of: UInt64.self, at: offset, count: count, order: .bigEndian, what: what)
  }
}
