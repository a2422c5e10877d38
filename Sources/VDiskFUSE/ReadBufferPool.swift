import Synchronization

/// Reusable read buffers, so a read request allocates nothing: a worker takes one, fills it,
/// replies from it and gives it back. At most `retained` idle buffers are kept (about one per
/// worker thread); the rest are freed on return.
final class ReadBufferPool: Sendable {
  /// A buffer owned by whoever took it from the pool until it is given back.
  struct Buffer: @unchecked Sendable {
    let bytes: UnsafeMutableRawBufferPointer
  }

  let bufferSize: Int
  private let retained: Int
  private let idle = Mutex<[Buffer]>([])

  init(bufferSize: Int, retained: Int) {
    self.bufferSize = bufferSize
    self.retained = max(1, retained)
  }

  deinit {
    idle.withLock { buffers in
      for b in buffers { b.bytes.deallocate() }
      buffers.removeAll()
    }
  }

  /// Calls `body` with a buffer of at least `count` bytes (a pooled one when `count` fits the
  /// pool's size, else a one-off allocation).
  func withBuffer<R>(count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
    guard count <= bufferSize else {
      let once = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
      defer { once.deallocate() }
      return try body(once)
    }
    let buffer =
      idle.withLock { $0.popLast() }
      ?? Buffer(bytes: .allocate(byteCount: bufferSize, alignment: 4096))
    defer {
      let kept = idle.withLock { buffers in
        guard buffers.count < retained else { return false }
        buffers.append(buffer)
        return true
      }
      if !kept { buffer.bytes.deallocate() }
    }
    return try body(UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[0..<count]))
  }

  /// Idle buffers currently kept (for tests).
  var idleCount: Int { idle.withLock { $0.count } }
}
