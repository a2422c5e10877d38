import Synchronization

/// A thread-safe least-recently-used cache with a byte budget, for metadata tables (qcow2 L2
/// tables, decompressed clusters, grain tables, BAT pages). It knows nothing of formats.
///
/// Entries cost what their owner says (normally their size in bytes). Inserting evicts
/// least-recently-used entries until the total cost fits the budget; a single entry larger than
/// the whole budget is still kept (alone), so a lookup never thrashes on one oversized table.
/// Loading happens outside the lock: two threads missing on the same key may both load it, and
/// the second insert simply replaces the first.
///
/// A hit takes the lock shared and stamps the entry with a logical clock, so concurrent readers
/// never wait for each other (the read path of every request goes through here). Recency is the
/// stamp; an insert that must evict sorts the entries by stamp once into an eviction queue and
/// takes victims from it, skipping entries touched since they were queued.
///
/// The hit path (`get`, `value(for:cost:load:)`) is `@inlinable` so that the format drivers, in
/// other modules, get it specialized for their key and value: called generically, every hit
/// looked up type metadata at run time, which cost more than the rest of the lookup.
public final class TableCache<Key: Hashable & Sendable, Value: Sendable>: @unchecked Sendable {
  public struct Statistics: Sendable, Equatable {
    public var hits = 0
    public var misses = 0
    public var evictions = 0
  }

  @usableFromInline
  final class Entry: Sendable {
    let key: Key
    @usableFromInline let value: Value
    let cost: Int
    @usableFromInline let lastUsed: Atomic<UInt64>

    init(key: Key, value: Value, cost: Int, stamp: UInt64) {
      self.key = key
      self.value = value
      self.cost = cost
      self.lastUsed = Atomic(stamp)
    }
  }

  /// An eviction candidate: the entry's stamp when queued (weak, so the queue keeps nothing alive).
  private struct Candidate {
    let stamp: UInt64
    weak var entry: Entry?
  }

  public let budget: Int
  @usableFromInline let lock = ReadWriteLock()
  @usableFromInline let clock = Atomic<UInt64>(0)
  @usableFromInline let hits = Atomic<Int>(0)
  @usableFromInline let misses = Atomic<Int>(0)
  private let evictions = Atomic<Int>(0)
  // Guarded by `lock` (which is why the run-time exclusivity check, a cost on every hit, is off).
  @exclusivity(unchecked) @usableFromInline var index: [Key: Entry] = [:]
  private var costSum = 0
  private var queue: [Candidate] = []
  private var queueHead = 0

  /// - Parameter budget: the most the cached entries may cost together, in bytes.
  public init(budget: Int) {
    self.budget = max(0, budget)
  }

  @inlinable @inline(__always)
  func tick() -> UInt64 {
    clock.wrappingAdd(1, ordering: .relaxed).newValue
  }

  /// The cached value for `key`, marking it most recently used; nil when absent.
  @inlinable
  public func get(_ key: Key) -> Value? {
    guard let entry = lock.withReadLock({ index[key] }) else {
      misses.wrappingAdd(1, ordering: .relaxed)
      return nil
    }
    hits.wrappingAdd(1, ordering: .relaxed)
    entry.lastUsed.store(tick(), ordering: .relaxed)
    return entry.value
  }

  /// Caches `value` under `key` as most recently used, evicting least-recently-used entries
  /// until the total cost fits the budget.
  public func insert(_ key: Key, _ value: Value, cost: Int) {
    let entry = Entry(key: key, value: value, cost: max(0, cost), stamp: tick())
    lock.withWriteLock {
      if let old = index[key] { costSum -= old.cost }
      index[key] = entry
      costSum += entry.cost
      while costSum > budget, let victim = nextVictim(sparing: entry) {
        index[victim.key] = nil
        costSum -= victim.cost
        evictions.wrappingAdd(1, ordering: .relaxed)
      }
    }
  }

  /// The least recently used entry other than `spared`, or nil when there is none. Call with the
  /// lock held exclusively. A queued entry stamped again since it was queued is newer than every
  /// untouched one still queued, so it is dropped from the queue (it is queued again at the next
  /// rebuild). After a rebuild the first live candidate is taken even if touched meanwhile, so
  /// concurrent hits cannot keep eviction from finishing.
  private func nextVictim(sparing spared: Entry) -> Entry? {
    var rebuilt = false
    while true {
      if queueHead >= queue.count {
        guard !rebuilt else { return nil }
        queue = index.values.lazy.filter { $0 !== spared }
          .map { Candidate(stamp: $0.lastUsed.load(ordering: .relaxed), entry: $0) }
          .sorted { $0.stamp < $1.stamp }
        queueHead = 0
        rebuilt = true
        if queue.isEmpty { return nil }
      }
      let candidate = queue[queueHead]
      queue[queueHead].entry = nil
      queueHead += 1
      guard let entry = candidate.entry, entry !== spared, index[entry.key] === entry else { continue }
      if !rebuilt && entry.lastUsed.load(ordering: .relaxed) != candidate.stamp { continue }
      return entry
    }
  }

  /// The cached value for `key`, or the result of `load` (called without the lock held), which
  /// is then cached with `cost`.
  @inlinable
  public func value(for key: Key, cost: Int, load: () throws -> Value) rethrows -> Value {
    if let hit = get(key) { return hit }
    let value = try load()
    insert(key, value, cost: cost)
    return value
  }

  public func remove(_ key: Key) {
    lock.withWriteLock {
      if let old = index.removeValue(forKey: key) { costSum -= old.cost }
    }
  }

  public func removeAll() {
    lock.withWriteLock {
      index = [:]
      costSum = 0
      queue = []
      queueHead = 0
    }
  }

  public var count: Int { lock.withReadLock { index.count } }
  public var totalCost: Int { lock.withReadLock { costSum } }
  public var statistics: Statistics {
    Statistics(
      hits: hits.load(ordering: .relaxed), misses: misses.load(ordering: .relaxed),
      evictions: evictions.load(ordering: .relaxed))
  }

  /// Keys from most to least recently used (for tests and diagnostics).
  public var keysByRecency: [Key] {
    lock.withReadLock {
      index.values.map { ($0.lastUsed.load(ordering: .relaxed), $0.key) }.sorted { $0.0 > $1.0 }.map(\.1)
    }
  }
}
