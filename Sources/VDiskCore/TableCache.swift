import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// A thread-safe least-recently-used cache with a byte budget, for metadata tables (qcow2 L2
/// tables, decompressed clusters, grain tables, BAT pages). It knows nothing of formats.
///
/// Entries cost what their owner says (normally their size in bytes). Inserting evicts
/// least-recently-used clean entries until the total cost fits the budget; a single entry larger
/// than the whole budget is still kept (alone), so a lookup never thrashes on one oversized table.
/// Loading happens outside the lock: two threads missing on the same key may both load it; the
/// first insert wins and the other gets that value back (`value(for:cost:load:)`).
///
/// Dirty entries (a writer's changed metadata, QEMU's `qcow2-cache.c` dirty tables) count against
/// the same budget but are never evicted: the owner writes them back in its own dependency order
/// and marks them clean (`markClean`), and only then can they go. `dirtyCost` tells the owner when
/// to do that. Readers see dirty and clean entries alike. A reader that loads a table from the
/// file while its owner writes that table back could read it torn, so write-backs run inside
/// `writingBack` and a load that overlapped one is discarded and repeated (a sequence lock).
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
    let isDirty: Bool
    @usableFromInline let lastUsed: Atomic<UInt64>

    init(key: Key, value: Value, cost: Int, stamp: UInt64, isDirty: Bool) {
      self.key = key
      self.value = value
      self.cost = cost
      self.isDirty = isDirty
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
  /// Odd while an owner writes tables back; bumped before and after each write-back.
  @usableFromInline let writeBackSequence = Atomic<UInt64>(0)
  // Guarded by `lock` (which is why the run-time exclusivity check, a cost on every hit, is off).
  @exclusivity(unchecked) @usableFromInline var index: [Key: Entry] = [:]
  private var costSum = 0
  private var dirtySum = 0
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

  /// Caches `value` under `key` as most recently used (replacing what was there, dirty or not),
  /// evicting least-recently-used clean entries until the total cost fits the budget. A `dirty`
  /// entry stays until `markClean`.
  public func insert(_ key: Key, _ value: Value, cost: Int, dirty: Bool = false) {
    let entry = Entry(key: key, value: value, cost: max(0, cost), stamp: tick(), isDirty: dirty)
    lock.withWriteLock {
      if let old = index[key] { forget(old) }
      add(entry)
    }
  }

  /// Caches `value` (clean) unless `key` is cached already, and returns the cached value: the one
  /// found, or `value`. Returns nil without caching when a write-back ran since `sequence` (a
  /// `writeBackSequence` read before `value` was loaded), so the caller loads again.
  @usableFromInline
  func insertIfAbsent(_ key: Key, _ value: Value, cost: Int, sequence: UInt64) -> Value? {
    lock.withWriteLock {
      if let found = index[key] { return found.value }
      guard writeBackSequence.load(ordering: .acquiring) == sequence else { return nil }
      add(Entry(key: key, value: value, cost: max(0, cost), stamp: tick(), isDirty: false))
      return value
    }
  }

  /// Marks the entry under `key` clean (its owner wrote it back; the owner serializes its own
  /// changes, so the entry is the one written), then evicts what no longer fits.
  public func markClean(_ key: Key) {
    lock.withWriteLock {
      guard let old = index[key], old.isDirty else { return }
      forget(old)
      add(
        Entry(
          key: key, value: old.value, cost: old.cost, stamp: old.lastUsed.load(ordering: .relaxed),
          isDirty: false))
    }
  }

  /// Runs `body`, which writes tables of this cache back to their file, so that concurrent loads
  /// of those tables are repeated rather than trusted. Keep `body` short (no `fdatasync`): loads
  /// wait while it runs.
  public func writingBack<R>(_ body: () throws -> R) rethrows -> R {
    writeBackSequence.wrappingAdd(1, ordering: .acquiringAndReleasing)
    defer { writeBackSequence.wrappingAdd(1, ordering: .acquiringAndReleasing) }
    return try body()
  }

  /// The dirty entries whose key satisfies `filter`, in no particular order.
  public func dirtyEntries(where filter: (Key) -> Bool) -> [(key: Key, value: Value)] {
    lock.withReadLock {
      index.values.filter { $0.isDirty && filter($0.key) }.map { ($0.key, $0.value) }
    }
  }

  /// What the dirty entries cost together.
  public var dirtyCost: Int { lock.withReadLock { dirtySum } }

  /// Whether dirty entries hold over three quarters of the budget: the point at which every
  /// writer writes its metadata back (in its own order), so that clean tables keep room to load.
  public var isMostlyDirty: Bool { dirtyCost > budget / 4 * 3 }

  /// Call with the lock held exclusively.
  private func add(_ entry: Entry) {
    index[entry.key] = entry
    costSum += entry.cost
    if entry.isDirty { dirtySum += entry.cost }
    while costSum > budget, let victim = nextVictim(sparing: entry) {
      index[victim.key] = nil
      forget(victim)
      evictions.wrappingAdd(1, ordering: .relaxed)
    }
  }

  /// Takes `entry`'s cost off the sums (call with the lock held exclusively; the caller removes
  /// or replaces the index slot).
  private func forget(_ entry: Entry) {
    costSum -= entry.cost
    if entry.isDirty { dirtySum -= entry.cost }
  }

  /// The least recently used clean entry other than `spared`, or nil when there is none. Call with the
  /// lock held exclusively. A queued entry stamped again since it was queued is newer than every
  /// untouched one still queued, so it is dropped from the queue (it is queued again at the next
  /// rebuild). After a rebuild the first live candidate is taken even if touched meanwhile, so
  /// concurrent hits cannot keep eviction from finishing.
  private func nextVictim(sparing spared: Entry) -> Entry? {
    var rebuilt = false
    while true {
      if queueHead >= queue.count {
        guard !rebuilt else { return nil }
        queue = index.values.lazy.filter { $0 !== spared && !$0.isDirty }
          .map { Candidate(stamp: $0.lastUsed.load(ordering: .relaxed), entry: $0) }
          .sorted { $0.stamp < $1.stamp }
        queueHead = 0
        rebuilt = true
        if queue.isEmpty { return nil }
      }
      let candidate = queue[queueHead]
      queue[queueHead].entry = nil
      queueHead += 1
      guard let entry = candidate.entry, entry !== spared, !entry.isDirty, index[entry.key] === entry else {
        continue
      }
      if !rebuilt && entry.lastUsed.load(ordering: .relaxed) != candidate.stamp { continue }
      return entry
    }
  }

  /// The cached value for `key`, or the result of `load` (called without the lock held), which
  /// is then cached clean with `cost`. When another thread cached the key meanwhile, its value is
  /// returned instead; a load that overlapped a write-back is repeated.
  @inlinable
  public func value(for key: Key, cost: Int, load: () throws -> Value) rethrows -> Value {
    while true {
      if let hit = get(key) { return hit }
      let sequence = writeBackSequence.load(ordering: .acquiring)
      guard sequence & 1 == 0 else {
        // A write-back is writing tables (pwrites to the page cache, never a sync): wait it out.
        yieldThread()
        continue
      }
      let value = try load()
      if let cached = insertIfAbsent(key, value, cost: cost, sequence: sequence) { return cached }
    }
  }

  public func remove(_ key: Key) {
    lock.withWriteLock {
      if let old = index.removeValue(forKey: key) { forget(old) }
    }
  }

  public func removeAll() {
    lock.withWriteLock {
      index = [:]
      costSum = 0
      dirtySum = 0
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

/// Gives up the processor (loads waiting out a write-back).
@usableFromInline
func yieldThread() {
  sched_yield()
}
