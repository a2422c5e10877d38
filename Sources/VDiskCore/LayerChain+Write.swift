/// The write engine: the one place that writes guest data, for every writable format. The top
/// layer says where bytes go (`WritableLayer.prepareWrite`); the engine holds the range, reads
/// copy-on-write fill through the chain, writes each host-contiguous run with one gathered write,
/// and has the layer link what it wrote (docs/DESIGN.md, "The write path").
extension LayerChain {
  /// The top layer when it can be written; throws `.readOnly` otherwise.
  public var writableTop: any WritableLayer {
    get throws {
      guard let writable = top as? any WritableLayer, top.file.isWritable else {
        throw VDiskError(.readOnly, path: top.file.path, "the image is open read-only")
      }
      return writable
    }
  }

  /// The most one prepare/write/commit round covers, so that a huge write does not hold units or
  /// fill buffers for long.
  static let writeRound: UInt64 = 4 << 20

  /// The most one discard round covers (in units of the layer): reads and writes of the range
  /// proceed between rounds.
  static let discardRoundUnits: UInt64 = 8192

  /// Writes `data` at guest `offset`. Writes past the end of the disk fail with `.noSpace`
  /// (disk.raw has a fixed size; `resize` grows it). Returns the number of bytes written.
  public func write(_ data: UnsafeRawBufferPointer, at offset: UInt64) throws -> Int {
    let layer = try writableTop
    guard !data.isEmpty else { return 0 }
    let (end, overflow) = offset.addingReportingOverflow(UInt64(data.count))
    guard !overflow, end <= virtualSize else {
      throw VDiskError(
        .noSpace, path: top.file.path, offset: offset,
        "write of \(data.count) bytes at \(hex(offset)) reaches past the end of the disk (size \(hex(virtualSize)))"
      )
    }
    var done: UInt64 = 0
    while done < UInt64(data.count) {
      let start = offset + done
      let length = min(Self.writeRound, UInt64(data.count) - done)
      try layer.writeLocks.holding(start, start + length, unit: layer.writeUnit) {
        let prepared = try layer.prepareWrite(at: start, length: length)
        do {
          let own = UnsafeRawBufferPointer(rebasing: data[Int(done)..<Int(done + length)])
          try layer.vet(own, at: start) {
            try perform(prepared.targets, data: data, dataOffset: offset, range: start..<start + length)
          }
          try layer.commitWrite(prepared)
        } catch {
          layer.abortWrite(prepared)
          throw error
        }
      }
      done += length
    }
    return data.count
  }

  /// One piece of a run: caller bytes, or fill bytes at `fillOffset` in the fill buffer.
  private struct Piece {
    var file: ImageFile
    var host: UInt64
    var length: Int
    /// Offset of the bytes in the caller's data, or nil for fill.
    var dataStart: Int?
    var fillStart: Int
  }

  /// Writes the targets of a prepared write of guest range `range` (the caller's bytes `data`
  /// start at guest `dataOffset`): reads all fill through the chain into one buffer, then writes
  /// each host-contiguous run of pieces with one gathered write.
  func perform(
    _ targets: [WriteTarget], data: UnsafeRawBufferPointer, dataOffset: UInt64, range: Range<UInt64>
  ) throws {
    var pieces: [Piece] = []
    var fills: [(guest: Range<UInt64>, start: Int)] = []
    var fillBytes = 0
    for target in targets {
      func host(_ guest: UInt64) -> UInt64 { target.hostOffset + (guest - target.guest.lowerBound) }
      let own = range.clamped(to: target.guest)
      var parts = target.fill.map { ($0, false) }
      if !own.isEmpty { parts.append((own, true)) }
      parts.sort { $0.0.lowerBound < $1.0.lowerBound }
      for (guest, isData) in parts where !guest.isEmpty {
        guard guest.lowerBound >= target.guest.lowerBound, guest.upperBound <= target.guest.upperBound else {
          throw VDiskError.corrupt(
            target.file.path, at: target.hostOffset,
            "\(top.formatName) driver planned fill \(hex(guest.lowerBound))..\(hex(guest.upperBound)) outside its run"
          )
        }
        let length = Int(guest.upperBound - guest.lowerBound)
        if isData {
          pieces.append(
            Piece(
              file: target.file, host: host(guest.lowerBound), length: length,
              dataStart: Int(guest.lowerBound - dataOffset), fillStart: 0))
        } else {
          pieces.append(
            Piece(
              file: target.file, host: host(guest.lowerBound), length: length, dataStart: nil,
              fillStart: fillBytes))
          fills.append((guest, fillBytes))
          fillBytes += length
        }
      }
    }
    let fill = UnsafeMutableRawBufferPointer.allocate(byteCount: max(fillBytes, 1), alignment: 4096)
    defer { fill.deallocate() }
    try readFill(fills, into: fill)
    // Zero fill wholly past the end of its file (a new unit at the end) is not written: the file
    // is extended over it after the data, as QEMU zeroes a new cluster's copy-on-write regions
    // with fallocate instead of writing them. The unit is this write's alone, so nothing else
    // writes there; bytes past the end of a file read as zeros.
    var beyondEnd: [Piece] = []
    pieces.removeAll { p in
      guard p.dataStart == nil, p.host >= p.file.size,
        Self.isZero(UnsafeRawBufferPointer(rebasing: fill[p.fillStart..<p.fillStart + p.length]))
      else { return false }
      beyondEnd.append(p)
      return true
    }
    pieces.sort { $0.file.id != $1.file.id ? $0.file.id < $1.file.id : $0.host < $1.host }
    var i = 0
    while i < pieces.count {
      var buffers: [UnsafeRawBufferPointer] = []
      var next = pieces[i].host
      var j = i
      while j < pieces.count, pieces[j].file === pieces[i].file, pieces[j].host == next {
        let p = pieces[j]
        buffers.append(
          p.dataStart.map { UnsafeRawBufferPointer(rebasing: data[$0..<$0 + p.length]) }
            ?? UnsafeRawBufferPointer(rebasing: fill[p.fillStart..<p.fillStart + p.length]))
        next += UInt64(p.length)
        j += 1
      }
      try pieces[i].file.write(gathering: buffers, at: pieces[i].host)
      i = j
    }
    // A skipped piece inside the file now (data written after it) is a hole: zeros already.
    for p in beyondEnd where p.host + UInt64(p.length) > p.file.size {
      try p.file.extendWithZeros(from: p.host, to: p.host + UInt64(p.length))
    }
  }

  /// Whether every byte of `bytes` is zero (eight at a time).
  static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
    let words = bytes.count / 8
    for k in 0..<words where bytes.loadUnaligned(fromByteOffset: k * 8, as: UInt64.self) != 0 {
      return false
    }
    return bytes[(words * 8)...].allSatisfy { $0 == 0 }
  }

  /// Reads the current guest bytes of every fill range into `buffer` (at each range's start),
  /// guest-contiguous ranges with one chain read.
  private func readFill(
    _ fills: [(guest: Range<UInt64>, start: Int)], into buffer: UnsafeMutableRawBufferPointer
  )
    throws
  {
    let size = virtualSize
    var i = 0
    while i < fills.count {
      var j = i + 1
      while j < fills.count, fills[j].guest.lowerBound == fills[j - 1].guest.upperBound,
        fills[j].start == fills[j - 1].start + Int(fills[j - 1].guest.count)
      {
        j += 1
      }
      let guest = fills[i].guest.lowerBound..<fills[j - 1].guest.upperBound
      let target = UnsafeMutableRawBufferPointer(
        rebasing: buffer[fills[i].start..<fills[i].start + Int(guest.count)])
      // A unit may reach past the end of the disk: those bytes are zeros.
      target.initializeMemory(as: UInt8.self, repeating: 0)
      if guest.lowerBound < size {
        _ = try read(into: target, at: guest.lowerBound)
      }
      i = j
    }
  }

  /// Makes `[offset, offset + length)` read as zeros (`fallocate` PUNCH_HOLE or ZERO_RANGE), in
  /// rounds of at most `discardRoundUnits` units so that other I/O proceeds between them.
  public func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws {
    let layer = try writableTop
    guard offset < virtualSize, length > 0 else { return }
    let end = offset + min(length, virtualSize - offset)
    let round = Self.discardRoundUnits * layer.writeUnit
    var position = offset
    while position < end {
      // Rounds end on unit boundaries, so a unit is never split between two rounds.
      let stop = min(end, (position / round + 1) * round)
      let leftovers = try layer.writeLocks.holding(position, stop, unit: layer.writeUnit) {
        try layer.discard(at: position, length: stop - position, mode: mode)
      }
      try writeZeros(leftovers)
      position = stop
    }
  }

  /// Overwrites `ranges` with zeros through `write`.
  private func writeZeros(_ ranges: [Range<UInt64>]) throws {
    guard let longest = ranges.map(\.count).max(), longest > 0 else { return }
    let zeros = [UInt8](repeating: 0, count: Int(min(Self.writeRound, UInt64(longest))))
    for range in ranges {
      var position = range.lowerBound
      while position < range.upperBound {
        let n = Int(min(UInt64(zeros.count), range.upperBound - position))
        _ = try zeros.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[0..<n]), at: position) }
        position += UInt64(n)
      }
    }
  }

  /// Writes back all metadata in order and syncs (fsync, flush, unmount). Fails (EIO) once a
  /// sync of the top file has failed, even with nothing left to sync (`ImageFile.dataSync`).
  public func flush() throws {
    try writableTop.flush()
    try top.file.checkSyncs()
  }

  /// Grows (or, when `allowShrink`, shrinks) the virtual disk, with every unit held.
  public func resize(to newSize: UInt64, allowShrink: Bool) throws {
    let layer = try writableTop
    try layer.writeLocks.holdingAll { try layer.resize(to: newSize, allowShrink: allowShrink) }
  }
}
