#if canImport(Glibc)
  import Glibc
#endif

/// Reusable read buffers, one per worker thread, so a read request allocates nothing and takes
/// no lock: a worker takes its thread's buffer, fills it, replies from it and puts it back. (A
/// pool shared under one mutex was the hottest contended lock with 4 concurrent readers.) A
/// thread's buffer is freed when the thread exits; a nested or oversized request gets a one-off
/// allocation.
///
/// A thread's block is one page of header (an in-use flag) followed by the buffer, so taking and
/// returning it is a flag flip, not a `pthread_setspecific` call per request.
final class ReadBufferPool: @unchecked Sendable {
  let bufferSize: Int
  private static let header = 4096
  private let key: pthread_key_t
  private let hasKey: Bool

  init(bufferSize: Int) {
    self.bufferSize = bufferSize
    var key = pthread_key_t()
    hasKey = pthread_key_create(&key) { free($0) } == 0
    self.key = key
  }

  deinit {
    // Buffers of threads still running stay theirs until they exit (libfuse's workers do when
    // the loop ends); the calling thread's own buffer is freed here.
    if hasKey {
      free(pthread_getspecific(key))
      pthread_key_delete(key)
    }
  }

  /// Calls `body` with a buffer of at least `count` bytes (this thread's buffer when `count` fits
  /// the pool's size and the buffer is not already in use, else a one-off allocation).
  func withBuffer<R>(count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
    guard count <= bufferSize, hasKey else { return try oneOff(count, body) }
    let block: UnsafeMutableRawPointer
    if let own = pthread_getspecific(key) {
      block = own
    } else {
      var fresh: UnsafeMutableRawPointer?
      guard posix_memalign(&fresh, 4096, Self.header + bufferSize) == 0, let fresh,
        pthread_setspecific(key, fresh) == 0
      else {
        free(fresh)
        return try oneOff(count, body)
      }
      fresh.storeBytes(of: false, as: Bool.self)
      block = fresh
    }
    // Only this thread touches its block: the flag needs no atomics.
    guard !block.load(as: Bool.self) else { return try oneOff(count, body) }
    block.storeBytes(of: true, as: Bool.self)
    defer { block.storeBytes(of: false, as: Bool.self) }
    return try body(UnsafeMutableRawBufferPointer(start: block + Self.header, count: count))
  }

  private func oneOff<R>(_ count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
    let once = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 4096)
    defer { once.deallocate() }
    return try body(UnsafeMutableRawBufferPointer(rebasing: once[0..<count]))
  }
}
