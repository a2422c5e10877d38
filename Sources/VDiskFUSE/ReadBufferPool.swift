#if canImport(Glibc)
  import Glibc
#endif

/// Reusable read buffers, one per worker thread, so a read request allocates nothing and takes
/// no lock: a worker takes its thread's buffer, fills it, replies from it and puts it back. (A
/// pool shared under one mutex was the hottest contended lock with 4 concurrent readers.) A
/// thread's buffer is freed when the thread exits; a nested or oversized request gets a one-off
/// allocation.
final class ReadBufferPool: @unchecked Sendable {
  let bufferSize: Int
  private var key = pthread_key_t()
  private let hasKey: Bool

  init(bufferSize: Int) {
    self.bufferSize = bufferSize
    hasKey = pthread_key_create(&key) { free($0) } == 0
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
    let base: UnsafeMutableRawPointer
    if let own = pthread_getspecific(key) {
      base = own
      pthread_setspecific(key, nil)
    } else {
      var fresh: UnsafeMutableRawPointer?
      guard posix_memalign(&fresh, 4096, bufferSize) == 0, let fresh else { return try oneOff(count, body) }
      base = fresh
    }
    defer {
      if pthread_getspecific(key) == nil { pthread_setspecific(key, base) } else { free(base) }
    }
    return try body(UnsafeMutableRawBufferPointer(start: base, count: count))
  }

  private func oneOff<R>(_ count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
    let once = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 4096)
    defer { once.deallocate() }
    return try body(UnsafeMutableRawBufferPointer(rebasing: once[0..<count]))
  }
}
