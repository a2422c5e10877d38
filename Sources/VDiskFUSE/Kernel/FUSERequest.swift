import CFuse

#if canImport(Glibc)
  import Glibc
#endif

/// One request as read from the device: the kernel's `fuse_in_header` and the bytes after it
/// (the opcode's argument struct, then names or write data). Every length the kernel states is
/// checked against the bytes read before anything is taken from them.
///
/// A request that came through an io_uring entry (`RingEntry`) has its argument struct in the
/// entry's 128-byte argument area and the rest (names, write data) in the payload: `arguments`
/// is that area and `body` the payload.
struct KernelRequest: @unchecked Sendable {
  // @unchecked: the bytes are the request buffer of one worker or one io_uring entry, which no
  // one else touches until the request's reply is sent (an io_uring request may be answered by a
  // `RingWorkers` thread: it is handed over whole, and its entry is not reused before the reply).
  let header: fuse_in_header
  /// The bytes after the header (`header.len - 40` of them); for an io_uring request, the
  /// payload after the argument struct.
  let body: UnsafeRawBufferPointer
  /// io_uring only: the area holding the opcode's argument struct.
  let arguments: UnsafeRawBufferPointer?

  /// Decodes the `count` bytes read into `bytes`; nil when they do not hold a header whose
  /// length matches what was read.
  init?(_ bytes: UnsafeRawBufferPointer) {
    let headerSize = MemoryLayout<fuse_in_header>.size
    guard bytes.count >= headerSize, let base = bytes.baseAddress else { return nil }
    let header = base.loadUnaligned(as: fuse_in_header.self)
    guard Int(header.len) == bytes.count else { return nil }
    self.header = header
    self.body = UnsafeRawBufferPointer(rebasing: bytes[headerSize...])
    self.arguments = nil
  }

  /// A request from an io_uring entry.
  init(header: fuse_in_header, arguments: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
    self.header = header
    self.body = payload
    self.arguments = arguments
  }

  var opcode: UInt32 { header.opcode }
  var unique: UInt64 { header.unique }
  var nodeID: UInt64 { header.nodeid }

  /// The opcode's argument struct at the start of the body; EINVAL when the body is shorter.
  func argument<T>(_ type: T.Type) throws -> T {
    let source = arguments ?? body
    guard source.count >= MemoryLayout<T>.size, let base = source.baseAddress else {
      throw FileSystemError(EINVAL)
    }
    return base.loadUnaligned(as: T.self)
  }

  /// The argument struct, zero-filled past the body's end when the kernel sent an older, shorter
  /// version of it (INIT before 7.36). EINVAL when the body is shorter than `minimum`.
  func argument<T>(_ type: T.Type, atLeast minimum: Int, zero: T) throws -> T {
    let bytes = arguments ?? body
    guard bytes.count >= minimum else { throw FileSystemError(EINVAL) }
    var value = zero
    withUnsafeMutableBytes(of: &value) { out in
      let n = min(out.count, bytes.count)
      if n > 0, let source = bytes.baseAddress, let target = out.baseAddress {
        target.copyMemory(from: source, byteCount: n)
      }
    }
    return value
  }

  /// The bytes after the argument struct of `argumentSize` bytes.
  func trailing(after argumentSize: Int) throws -> UnsafeRawBufferPointer {
    if let arguments {
      guard arguments.count >= argumentSize else { throw FileSystemError(EINVAL) }
      return body
    }
    guard body.count >= argumentSize else { throw FileSystemError(EINVAL) }
    return UnsafeRawBufferPointer(rebasing: body[argumentSize...])
  }

  /// A NUL-terminated name after the argument struct of `argumentSize` bytes (LOOKUP: right at
  /// the start); EINVAL when no NUL ends it within the body.
  func name(after argumentSize: Int) throws -> String {
    let bytes = try trailing(after: argumentSize)
    guard let end = bytes.firstIndex(of: 0) else { throw FileSystemError(EINVAL) }
    return String(decoding: bytes[..<end], as: UTF8.self)
  }
}

/// Where one request's one reply goes: the device descriptor it was read from (with cloned
/// descriptors each has its own queue of requests awaiting replies) and the request's `unique`,
/// or the io_uring entry it came in. A plain value: a reply may be sent later from another
/// thread (`FUSEContext.changed`), as long as the descriptor stays open, which the session
/// guarantees until it is destroyed.
struct FUSERequest: Sendable {
  let device: Int32
  let unique: UInt64
  /// The io_uring entry to answer through (nil: the device).
  var entry: RingEntry? = nil

  /// Answers with an error (`code` > 0 an errno; 0 success without data).
  @discardableResult
  func replyError(_ code: Int32) -> Int32 {
    if let entry { return entry.commit(error: -code, payloadLength: 0) }
    return cfuse_reply(device, unique, -code, nil, 0)
  }

  /// Answers with `bytes` as the reply's data.
  @discardableResult
  func reply(bytes: UnsafeRawBufferPointer) -> Int32 {
    if let entry { return entry.commit(bytes: bytes) }
    return cfuse_reply(device, unique, 0, bytes.baseAddress, bytes.count)
  }

  /// Answers with the bytes of `value` (one of the kernel's `fuse_*_out` structs).
  @discardableResult
  func reply<T>(_ value: T) -> Int32 {
    withUnsafeBytes(of: value) { reply(bytes: $0) }
  }
}

/// libfuse's conversion of a cache timeout in seconds into the kernel's seconds and nanoseconds.
func kernelTimeout(_ seconds: Double) -> (seconds: UInt64, nanoseconds: UInt32) {
  guard seconds > 0, seconds.isFinite else { return (seconds.isNaN || seconds <= 0 ? 0 : UInt64.max, 0) }
  guard seconds < Double(UInt64.max) else { return (UInt64.max, 0) }
  let whole = UInt64(seconds)
  let fraction = seconds - Double(whole)
  let nanoseconds = fraction >= 0.999_999_999 ? 999_999_999 : UInt32(max(0, fraction) * 1e9)
  return (whole, nanoseconds)
}
