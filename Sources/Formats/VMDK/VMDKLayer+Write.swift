import VDiskCore

/// The engine's write contract (`WritableLayer`), answered by the layer's `VMDKWriter`; a layer
/// opened read-only refuses with `.readOnly`.
extension VMDKLayer: WritableLayer {
  private func requireWriter() throws -> VMDKWriter {
    guard let writer else { throw VDiskError(.readOnly, path: file.path, "the image is open read-only") }
    return writer
  }

  public var writeUnit: UInt64 { writer?.writeUnit ?? 4096 }

  /// Never used on a read-only layer (the engine refuses writes there first).
  public var writeLocks: RangeLocks { writer?.locks ?? RangeLocks() }

  public func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard length > 0, !overflow, end <= virtualSize else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: offset,
        "write of \(length) bytes at \(hex(offset)) lies outside the disk (size \(hex(virtualSize)))")
    }
    return try requireWriter().prepareWrite(extents, at: offset, length: length)
  }

  public func commitWrite(_ prepared: PreparedWrite) throws {
    try requireWriter().commitWrite(prepared)
  }

  public func abortWrite(_ prepared: PreparedWrite) {
    writer?.abortWrite(prepared)
  }

  public func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>] {
    let writer = try requireWriter()
    guard offset < virtualSize, length > 0 else { return [] }
    return try writer.discard(extents, at: offset, length: min(length, virtualSize - offset))
  }

  public func flush() throws {
    try requireWriter().flush()
  }

  /// QEMU's vmdk driver cannot resize (`qemu-img resize` on a vmdk says the format does not
  /// support it), and neither does vdiskfs: growing a sparse extent would mean a new grain
  /// directory, and a flat one a new extent line.
  public func resize(to newSize: UInt64, allowShrink: Bool) throws {
    _ = try requireWriter()
    throw VDiskError.unsupported(
      file.path,
      "vmdk images cannot be resized (QEMU's vmdk driver cannot either); convert to qcow2 or raw first")
  }
}
