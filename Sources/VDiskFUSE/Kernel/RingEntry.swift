import CFuse
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// One FUSE-over-io_uring entry: the buffers registered with the kernel (a
/// `fuse_uring_req_header` and a payload of `max_payload` bytes) through which one request at a
/// time arrives and its reply leaves. The kernel writes the request's `fuse_in_header`, its
/// argument struct and its payload (names, write data), then completes the entry's command;
/// vdiskfs writes the `fuse_out_header` and the reply's data into the same buffers and commits
/// (`FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, which also asks for the next request).
///
/// A reply may be made on another thread (a deferred write reply, `FUSEContext.changed`): the
/// buffers are filled there and the commit goes to the queue's thread (`RingQueue.commit`).
final class RingEntry: @unchecked Sendable {
  // @unchecked: the buffers belong to the kernel while the entry's command is pending and to
  // the one request being answered otherwise; `answered` makes the reply happen once.
  let index: Int
  let header: UnsafeMutableRawPointer
  let payload: UnsafeMutableRawPointer
  let payloadCapacity: Int
  /// The two iovecs REGISTER names (they must outlive the command).
  let vectors: UnsafeMutablePointer<iovec>
  unowned let queue: RingQueue
  private let answered = Atomic<Bool>(true)

  init?(index: Int, payloadCapacity: Int, queue: RingQueue) {
    var headerMemory: UnsafeMutableRawPointer?
    var payloadMemory: UnsafeMutableRawPointer?
    guard posix_memalign(&headerMemory, 4096, 4096) == 0, let headerMemory else { return nil }
    guard posix_memalign(&payloadMemory, 4096, payloadCapacity) == 0, let payloadMemory else {
      free(headerMemory)
      return nil
    }
    memset(headerMemory, 0, 4096)
    self.index = index
    self.header = headerMemory
    self.payload = payloadMemory
    self.payloadCapacity = payloadCapacity
    self.queue = queue
    vectors = .allocate(capacity: 2)
    vectors[0] = iovec(iov_base: headerMemory, iov_len: MemoryLayout<fuse_uring_req_header>.size)
    vectors[1] = iovec(iov_base: payloadMemory, iov_len: payloadCapacity)
  }

  deinit {
    free(header)
    free(payload)
    vectors.deallocate()
  }

  /// The trailer at byte 256 of the header (its offset pinned by uring.c's `_Static_assert`).
  private var trailer: UnsafeMutablePointer<fuse_uring_ent_in_out> {
    (header + 2 * Int(FUSE_URING_IN_OUT_HEADER_SZ)).assumingMemoryBound(to: fuse_uring_ent_in_out.self)
  }

  /// The request the kernel just put in the buffers: nil when its sizes are out of bounds (the
  /// kernel states them; a mismatch is not expected). Arms the entry for one reply.
  func request() -> KernelRequest? {
    let inHeader = header.loadUnaligned(as: fuse_in_header.self)
    let payloadSize = Int(trailer.pointee.payload_sz)
    answered.store(false, ordering: .relaxed)
    guard payloadSize <= payloadCapacity else { return nil }
    let arguments = UnsafeRawBufferPointer(
      start: header + Int(FUSE_URING_IN_OUT_HEADER_SZ), count: Int(FUSE_URING_OP_IN_OUT_SZ))
    return KernelRequest(
      header: inHeader, arguments: arguments,
      payload: UnsafeRawBufferPointer(start: payload, count: payloadSize))
  }

  /// The request's `unique`, which its commit names.
  var commitID: UInt64 { trailer.pointee.commit_id }

  /// Answers with `error` (0 or a negative errno) and the first `length` bytes of the payload
  /// buffer as the reply's data (filled by the caller), then commits. Only the first answer
  /// counts. Returns 0.
  @discardableResult
  func commit(error: Int32, payloadLength length: Int) -> Int32 {
    guard !answered.exchange(true, ordering: .acquiringAndReleasing) else { return 0 }
    let dataLength = error == 0 ? max(0, min(length, payloadCapacity)) : 0
    var out = fuse_out_header()
    out.len = UInt32(MemoryLayout<fuse_out_header>.size + dataLength)
    out.error = error
    out.unique = commitID
    header.storeBytes(of: out, as: fuse_out_header.self)
    trailer.pointee.payload_sz = UInt32(dataLength)
    queue.commit(self, large: dataLength >= RingWorkers.largeReply)
    return 0
  }

  /// Answers with a copy of `bytes` as the reply's data (EIO when they do not fit the payload,
  /// which a reply the kernel sized never does).
  @discardableResult
  func commit(bytes: UnsafeRawBufferPointer) -> Int32 {
    guard bytes.count <= payloadCapacity else { return commit(error: -EIO, payloadLength: 0) }
    if let base = bytes.baseAddress, bytes.count > 0, base != UnsafeRawPointer(payload) {
      payload.copyMemory(from: base, byteCount: bytes.count)
    }
    return commit(error: 0, payloadLength: bytes.count)
  }
}
