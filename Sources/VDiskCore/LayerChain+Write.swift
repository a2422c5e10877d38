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

  /// The most one prepare/write/commit round covers, so that a huge write does not hold clusters
  /// or fill buffers for long.
  static let writeRound: UInt64 = 4 << 20

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
      let length = min(Self.writeRound, UInt64(data.count) - done)
      let prepared = try layer.prepareWrite(at: offset + done, length: length)
      do {
        try Self.perform(prepared.segments, data: data, dataOffset: offset)
        try layer.commitWrite(prepared)
      } catch {
        layer.abortWrite(prepared)
        throw error
      }
      done += length
    }
    return data.count
  }

  /// Writes segments, merging host-contiguous neighbours in one file into one `pwrite`; a run
  /// made of guest bytes alone is written straight from the caller's buffer.
  static func perform(_ segments: [WriteSegment], data: UnsafeRawBufferPointer, dataOffset: UInt64) throws {
    var i = 0
    while i < segments.count {
      var j = i + 1
      var runEnd = segments[i].hostOffset + UInt64(segments[i].length)
      while j < segments.count, segments[j].file === segments[i].file, segments[j].hostOffset == runEnd {
        runEnd += UInt64(segments[j].length)
        j += 1
      }
      let run = segments[i..<j]
      if run.count == 1, case .guest(let guestOffset, let length) = run[i].content {
        let start = Int(guestOffset - dataOffset)
        try run[i].file.write(
          UnsafeRawBufferPointer(rebasing: data[start..<start + length]), at: run[i].hostOffset)
      } else {
        var buffer = [UInt8]()
        buffer.reserveCapacity(Int(runEnd - segments[i].hostOffset))
        for segment in run {
          switch segment.content {
          case .guest(let guestOffset, let length):
            let start = Int(guestOffset - dataOffset)
            buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: data[start..<start + length]))
          case .fill(let bytes):
            buffer.append(contentsOf: bytes)
          }
        }
        try buffer.withUnsafeBytes { try segments[i].file.write($0, at: segments[i].hostOffset) }
      }
      i = j
    }
  }

  /// Makes `[offset, offset + length)` read as zeros (`fallocate` PUNCH_HOLE or ZERO_RANGE).
  public func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws {
    let layer = try writableTop
    guard offset < virtualSize, length > 0 else { return }
    let clipped = min(length, virtualSize - offset)
    let leftovers = try layer.discard(at: offset, length: clipped, mode: mode)
    let zeros = [UInt8](repeating: 0, count: Int(min(Self.writeRound, clipped)))
    for range in leftovers {
      var position = range.lowerBound
      while position < range.upperBound {
        let n = Int(min(UInt64(zeros.count), range.upperBound - position))
        _ = try zeros.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[0..<n]), at: position) }
        position += UInt64(n)
      }
    }
  }

  /// Writes back all metadata in order and syncs (fsync, flush, unmount).
  public func flush() throws {
    try writableTop.flush()
  }
}
