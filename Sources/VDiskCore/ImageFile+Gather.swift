import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

extension ImageFile {
  /// The most buffers one gathered write takes (IOV_MAX).
  static let maxGather = max(16, sysconf(Int32(_SC_IOV_MAX)))

  /// Writes `buffers` back to back at `offset`, in as few `pwritev` calls as the kernel allows
  /// (one for up to IOV_MAX buffers), continuing after short writes and EINTR.
  public func write(gathering buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws {
    guard buffers.count > 1 else {
      if let only = buffers.first { try write(only, at: offset) }
      return
    }
    guard isWritable else {
      throw VDiskError(.readOnly, path: path, offset: offset, "file is open read-only")
    }
    var vectors = buffers.filter { $0.count > 0 }.map {
      iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count)
    }
    let total = vectors.reduce(0) { $0 + $1.iov_len }
    var first = 0
    var position = offset
    while first < vectors.count {
      let count = min(vectors.count - first, Self.maxGather)
      let n = vectors.withUnsafeMutableBufferPointer { v in
        guard let base = v.baseAddress else { return 0 }
        return pwritev(descriptor.rawValue, base + first, Int32(count), off_t(position))
      }
      if n < 0 {
        let e = Glibc.errno
        if e == EINTR { continue }
        throw VDiskError(
          e == ENOSPC ? .noSpace : .io, path: path, offset: position,
          "write of \(total) bytes at \(hex(offset)) failed: \(Errno(rawValue: e))", errno: e)
      }
      // Skip what was written; a short write leaves part of one buffer.
      var written = n
      position += UInt64(n)
      while written > 0, first < vectors.count {
        if written >= vectors[first].iov_len {
          written -= vectors[first].iov_len
          first += 1
        } else {
          vectors[first].iov_base += written
          vectors[first].iov_len -= written
          written = 0
        }
      }
    }
    noteWritten(upTo: offset + UInt64(total))
  }
}
