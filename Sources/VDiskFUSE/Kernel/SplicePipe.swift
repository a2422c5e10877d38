import CFuse

#if canImport(Glibc)
  import Glibc
#endif

/// A worker's pipe for spliced read replies (`cfuse_reply_spliced`): the reply header and zero
/// ranges are vmspliced into it, the image's file ranges spliced into it, and the pipe spliced
/// into the device, so the data is copied once, by the kernel. One per worker thread, used only
/// by it. A pipe left dirty by a failed reply is replaced by a fresh one.
final class SplicePipe {
  private var fds: [Int32] = [-1, -1]
  /// The pipe's size in bytes (0: none could be made; the worker copies).
  private(set) var capacity = 0
  private let wanted: Int

  /// A pipe of `size` bytes (the capacity `FUSEContext.spliceCapacity` found).
  init?(size: Int) {
    wanted = size
    guard open() else { return nil }
  }

  deinit { close() }

  private func open() -> Bool {
    capacity = fds.withUnsafeMutableBufferPointer { Int(cfuse_pipe_open($0.baseAddress, wanted)) }
    return capacity > 0
  }

  private func close() {
    fds.withUnsafeMutableBufferPointer { cfuse_pipe_close($0.baseAddress) }
    capacity = 0
  }

  /// Sends `pieces` as the reply to `req`; false when nothing was sent (the caller copies). A
  /// reply the kernel no longer wants (ENOENT: interrupted; ENODEV: unmounted) counts as sent.
  func send(_ req: FUSERequest, _ pieces: [cfuse_piece]) -> Bool {
    guard capacity > 0 else { return false }
    let result = pieces.withUnsafeBufferPointer { p in
      fds.withUnsafeBufferPointer {
        cfuse_reply_spliced(req.device, $0.baseAddress, req.unique, p.baseAddress, p.count)
      }
    }
    if result == 0 { return true }
    // Leftovers in the pipe would become the start of the next reply: start over.
    close()
    _ = open()
    return result == -ENOENT || result == -ENODEV
  }
}
