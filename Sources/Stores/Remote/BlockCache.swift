#if canImport(Glibc)
  import Glibc
#endif

/// The in-memory block cache of remote objects: fixed-size blocks of every object a process has
/// open, least recently used evicted past the byte budget (`-o remote_cache`). It also makes
/// concurrent misses on one block fetch it once: the first reader claims the block, the others
/// wait for it (`claim`/`fill`/`abandon`).
///
/// A pthread mutex and condition variable, because `Synchronization.Mutex` cannot wait.
/// `@unchecked Sendable`: every stored property but the constants is touched with `mutex` held.
public final class BlockCache: @unchecked Sendable {
  public struct Key: Hashable, Sendable {
    /// `CachedRemoteSource.id`: unique per open object.
    public var object: UInt64
    public var block: UInt64
  }

  public let blockSize: Int
  public let budget: Int
  private let mutex: UnsafeMutablePointer<pthread_mutex_t>
  private let filled: UnsafeMutablePointer<pthread_cond_t>
  private var blocks: [Key: Entry] = [:]
  private var inFlight: Set<Key> = []
  private var bytes = 0
  private var clock: UInt64 = 0
  private var counters = Counters()

  /// What the cache did, for tests and the log.
  public struct Counters: Sendable, Equatable {
    public var hits = 0
    public var misses = 0
    public var waits = 0
    public var evictions = 0
  }

  private struct Entry {
    var data: [UInt8]
    var lastUse: UInt64
  }

  /// Blocks of `blockSize` bytes (a power of two), at most `budget` bytes of them (at least one
  /// block is kept, so a budget of 0 still works).
  public init(budget: Int, blockSize: Int = 1 << 20) {
    self.budget = max(0, budget)
    self.blockSize = blockSize
    mutex = .allocate(capacity: 1)
    mutex.initialize(to: pthread_mutex_t())
    pthread_mutex_init(mutex, nil)
    filled = .allocate(capacity: 1)
    filled.initialize(to: pthread_cond_t())
    pthread_cond_init(filled, nil)
  }

  deinit {
    pthread_cond_destroy(filled)
    pthread_mutex_destroy(mutex)
    filled.deallocate()
    mutex.deallocate()
  }

  public var counterValues: Counters { locked { counters } }

  /// Whether no block is being fetched.
  public var isIdle: Bool { locked { inFlight.isEmpty } }

  /// What a reader gets for a block: its bytes, or the duty to fetch it (then `fill` or
  /// `abandon` it, always).
  public enum Lookup {
    case cached([UInt8])
    case claimed
  }

  /// The block's bytes if cached; else waits while another reader fetches it and looks again;
  /// else claims it for the caller.
  public func lookup(_ key: Key) -> Lookup {
    locked {
      var waited = false
      while true {
        if var entry = blocks[key] {
          clock &+= 1
          entry.lastUse = clock
          blocks[key] = entry
          if !waited { counters.hits += 1 }
          return .cached(entry.data)
        }
        if !inFlight.contains(key) {
          inFlight.insert(key)
          counters.misses += 1
          return .claimed
        }
        if !waited { counters.waits += 1 }
        waited = true
        pthread_cond_wait(filled, mutex)
      }
    }
  }

  /// Claims the block for a prefetch if it is neither cached nor being fetched.
  public func claimIfAbsent(_ key: Key) -> Bool {
    locked {
      guard blocks[key] == nil, !inFlight.contains(key) else { return false }
      inFlight.insert(key)
      return true
    }
  }

  public func contains(_ key: Key) -> Bool { locked { blocks[key] != nil || inFlight.contains(key) } }

  /// Stores a claimed block (unless `keep` is false: a write changed it while it was fetched)
  /// and wakes its waiters.
  public func fill(_ key: Key, with data: [UInt8], keep: Bool = true) {
    locked {
      inFlight.remove(key)
      if keep {
        clock &+= 1
        if let old = blocks.updateValue(Entry(data: data, lastUse: clock), forKey: key) {
          bytes -= old.data.count
        }
        bytes += data.count
        evict(keeping: key)
      }
      pthread_cond_broadcast(filled)
    }
  }

  /// Gives up a claim (the fetch failed); a waiter then claims it and tries itself.
  public func abandon(_ key: Key) {
    locked {
      inFlight.remove(key)
      pthread_cond_broadcast(filled)
    }
  }

  /// Changes the cached copy of a block in place (a write-through store), if it is cached.
  public func patch(_ key: Key, at offset: Int, with source: UnsafeRawBufferPointer) {
    locked {
      guard var entry = blocks.removeValue(forKey: key) else { return }
      let end = min(entry.data.count, offset + source.count)
      if offset < end, let from = source.baseAddress {
        entry.data.withUnsafeMutableBytes { data in
          data.baseAddress.map { ($0 + offset).copyMemory(from: from, byteCount: end - offset) }
        }
      }
      blocks[key] = entry
    }
  }

  /// Drops every block of `object` at or past `block` (a resize, a closed object).
  public func drop(object: UInt64, from block: UInt64 = 0) {
    locked {
      for key in blocks.keys where key.object == object && key.block >= block {
        if let entry = blocks.removeValue(forKey: key) { bytes -= entry.data.count }
      }
    }
  }

  /// Evicts least recently used blocks past the budget (a scan: a budget holds hundreds to a few
  /// thousand blocks, and only a fill evicts).
  private func evict(keeping kept: Key) {
    while bytes > budget, blocks.count > 1 {
      var oldest: (key: Key, use: UInt64)?
      for (key, entry) in blocks where key != kept && entry.lastUse < (oldest?.use ?? .max) {
        oldest = (key, entry.lastUse)
      }
      guard let victim = oldest?.key, let entry = blocks.removeValue(forKey: victim) else { return }
      bytes -= entry.data.count
      counters.evictions += 1
    }
  }

  private func locked<R>(_ body: () -> R) -> R {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    return body()
  }
}
