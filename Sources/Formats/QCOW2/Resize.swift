import VDiskCore

/// Changing the virtual size (qcow2 spec, "size", "l1_size"): growing may move the L1 table to a
/// larger run of clusters (QEMU's `qcow2_grow_l1_table`); shrinking is allowed only when asked
/// and when no cluster past the new end holds anything. The engine holds every cluster meanwhile.
extension QCOW2Writer {
  func resize(to newSize: UInt64, allowShrink: Bool) throws {
    let changes = try state.withLock { s -> Bool in
      try s.checkWritable()
      guard newSize != s.virtualSize else { return false }
      guard newSize <= UInt64(Int64.max) else {
        throw VDiskError(.invalidArgument, path: s.path, "size \(newSize) is too large")
      }
      if newSize < s.virtualSize {
        guard allowShrink else {
          throw VDiskError(
            .invalidArgument, path: s.path,
            "shrinking from \(s.virtualSize) to \(newSize) bytes needs allowShrink")
        }
        try s.checkNothingAllocated(from: s.geometry.roundUp(newSize))
      } else {
        try s.growL1(toCover: newSize)
      }
      return true
    }
    guard changes else { return }
    // The (grown) L1 table is on disk before the header's size needs it.
    try writeBack()
    try file.writeHeaderField(.size, newSize)
    try file.dataSync()
    state.withLock { $0.virtualSize = newSize }
    setVirtualSize(newSize)
  }
}

extension WriteState {
  /// Throws `.invalidArgument` when any L2 entry from guest offset `offset` on is not plain
  /// unallocated (data, zero or compressed would be lost by a shrink).
  mutating func checkNothingAllocated(from offset: UInt64) throws {
    let g = geometry
    var cluster = offset >> UInt64(g.clusterBits)
    while cluster / g.l2Entries < UInt64(l1.count) {
      let l1Index = Int(cluster / g.l2Entries)
      guard let table = try l2Table(l1Index: l1Index) else {
        cluster = (UInt64(l1Index) + 1) * g.l2Entries
        continue
      }
      let word = Int(cluster % g.l2Entries) * g.wordsPerEntry
      if table.words[word] != 0 || (g.extendedL2 && table.words[word + 1] != 0) {
        throw VDiskError(
          .invalidArgument, path: path,
          "cannot shrink: guest cluster \(hex(cluster << UInt64(g.clusterBits))) past the new end is in use")
      }
      cluster += 1
    }
  }

  /// Makes the L1 table large enough for a disk of `size` bytes, moving it when it must grow.
  mutating func growL1(toCover size: UInt64) throws {
    let needed = geometry.l1Entries(forSize: size)
    guard needed * 8 <= QCOW2Header.maxL1Bytes else {
      throw VDiskError.unsupported(path, "a size of \(size) bytes needs an L1 table larger than 64 MiB")
    }
    guard needed > UInt64(l1.count) else { return }
    let bytes = geometry.roundUp(needed * 8)
    let old = HostRange(offset: l1Offset, length: geometry.roundUp(UInt64(l1.count) * 8))
    let fresh = try allocate(clusters: bytes / clusterSize)
    l1 += [UInt64](repeating: 0, count: Int(needed) - l1.count)
    activeL1.replace(with: l1)
    l1Offset = fresh
    if old.offset == diskL1.offset {
      if old.offset != 0, old.length > 0 { afterHeaderFrees.append(old) }
    } else if old.offset != 0 {
      try free(old)
    }
  }
}
