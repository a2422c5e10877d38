import VDiskCore

/// A block allocated by `prepareWrite`, linked into the BAT by `commitWrite`.
struct VHDNewBlock: Sendable {
  var index: Int
  /// Host offset of the block (its sector bitmap); the BAT entry is `start / 512`.
  var start: UInt64
  /// The bitmap as written, in cache form.
  var bitmap: [UInt64]
}

/// Sector bitmap bits a write sets in a block that was already allocated.
struct VHDBitUpdate: Sendable {
  /// Host offset of the block's bitmap.
  var start: UInt64
  var sectors: Range<Int>
}

/// The token of a prepared write: what `commitWrite` links.
struct VHDPendingWrite: Sendable {
  var blocks: [VHDNewBlock] = []
  var bits: [VHDBitUpdate] = []
  var isEmpty: Bool { blocks.isEmpty && bits.isEmpty }
}

/// The writer's mutable state (behind its mutex): where the footer is, and which BAT pages and
/// sector bitmaps are dirty. Their contents live in the chain's `MetadataCache`, where readers
/// find them.
struct VHDWriteState: Sendable {
  /// Where the footer at the end of the file is: the next block goes here.
  var footerOffset: UInt64
  /// Indices of BAT pages changed since they were last written back.
  var dirtyPages: Set<Int> = []
  /// Host offsets of sector bitmaps changed since they were last written back.
  var dirtyBitmaps: Set<UInt64> = []

  var hasDirtyMetadata: Bool { !dirtyPages.isEmpty || !dirtyBitmaps.isEmpty }

  /// Takes a block of `blockBytes` (bitmap and data) where the footer is, and writes the footer
  /// after it, then `bitmap` at its start. The footer goes first, so that the file ends with a
  /// valid footer at every moment; the bitmap then overwrites the old footer (vhd-notes.md,
  /// "Writing a dynamic VHD": a new block is put where the footer was). The block's data lies
  /// past the old end of the file and reads as zeros until written. Nothing names the block until
  /// its BAT entry is written back (after a sync), so a crash leaks it at worst. Returns the
  /// block's host offset.
  mutating func allocateBlock(file: ImageFile, footer: [UInt8], bitmap: [UInt8], blockBytes: UInt64) throws
    -> UInt64
  {
    let start = (footerOffset + 511) / 512 * 512
    let newFooter = start + blockBytes
    // A BAT entry is a 32-bit sector number, 0xFFFFFFFF meaning unallocated.
    guard start / 512 < UInt64(VHDBlockTable.unallocated), newFooter <= UInt64(Int64.max) else {
      throw VDiskError(
        .noSpace, path: file.path, offset: start,
        "no room for another block: a BAT entry cannot name a block at \(hex(start)) (the VHD limit is 2 TiB of file)"
      )
    }
    try footer.withUnsafeBytes { try file.write($0, at: newFooter) }
    footerOffset = newFooter
    try bitmap.withUnsafeBytes { try file.write($0, at: start) }
    return start
  }

  /// Links a prepared write: new blocks' bitmaps (on disk already) into the cache, then their BAT
  /// entries, and the bits set in existing blocks, as dirty cache entries.
  mutating func link(_ pending: VHDPendingWrite, table: VHDBlockTable) throws {
    let cache = table.cache
    let bitmapCost = Int(table.bitmapSize)
    for block in pending.blocks {
      cache.insert(table.bitmapKey(block.start), block.bitmap, cost: bitmapCost)
      let page = block.index / VHDBlockTable.pageEntries
      var words = try table.pageWords(page)
      let slot = block.index - page * VHDBlockTable.pageEntries
      guard slot < words.count else {
        throw VDiskError.corrupt(
          table.file.path, at: table.pageOffset(page), "BAT page at \(hex(table.pageOffset(page))) is short")
      }
      words[slot] = block.start / 512
      cache.insert(table.pageKey(page), words, cost: table.pageCost(page), dirty: true)
      dirtyPages.insert(page)
    }
    for update in pending.bits {
      var words = try table.bitmap(at: update.start)
      words.setSectorBits(update.sectors)
      cache.insert(table.bitmapKey(update.start), words, cost: bitmapCost, dirty: true)
      dirtyBitmaps.insert(update.start)
    }
  }
}
