#if canImport(Glibc)
  import Glibc
#endif

/// Starts a joinable pthread running `body` (the request loop's workers, the invalidation lanes,
/// the remote fetch workers, the daemon's serving thread: threads that must be signalled, joined
/// or detached, which Foundation's `Thread` does not offer). Nil when no thread could be made;
/// `body` then never runs. The caller joins or detaches the thread.
public func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t? {
  let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
  var thread = pthread_t()
  let made = pthread_create(
    &thread, nil,
    { argument in
      guard let argument else { return nil }
      Unmanaged<ThreadBody>.fromOpaque(argument).takeRetainedValue().body()
      return nil
    }, box)
  guard made == 0 else {
    Unmanaged<ThreadBody>.fromOpaque(box).release()
    return nil
  }
  return thread
}

/// The closure handed to `pthread_create` (a C function pointer cannot capture it).
private final class ThreadBody: Sendable {
  let body: @Sendable () -> Void
  init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}
