import Synchronization

/// A thread-safe least-recently-used cache with a byte budget, for metadata tables (qcow2 L2
/// tables, decompressed clusters, grain tables, BAT pages). It knows nothing of formats.
///
/// Entries cost what their owner says (normally their size in bytes). Inserting evicts
/// least-recently-used entries until the total cost fits the budget; a single entry larger than
/// the whole budget is still kept (alone), so a lookup never thrashes on one oversized table.
/// Loading happens outside the lock: two threads missing on the same key may both load it, and
/// the second insert simply replaces the first.
public final class TableCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
  public struct Statistics: Sendable, Equatable {
    public var hits = 0
    public var misses = 0
    public var evictions = 0
  }

  private struct Node {
    var key: Key
    var value: Value
    var cost: Int
    var prev: Int  // towards most recently used; -1 at the head
    var next: Int  // towards least recently used; -1 at the tail
  }

  private struct State {
    var index: [Key: Int] = [:]
    var nodes: [Node?] = []
    var free: [Int] = []
    var head = -1  // most recently used
    var tail = -1  // least recently used
    var totalCost = 0
    var stats = Statistics()

    mutating func unlink(_ i: Int) {
      guard let node = nodes[i] else { return }
      if node.prev >= 0 { nodes[node.prev]?.next = node.next } else { head = node.next }
      if node.next >= 0 { nodes[node.next]?.prev = node.prev } else { tail = node.prev }
      nodes[i]?.prev = -1
      nodes[i]?.next = -1
    }

    mutating func pushFront(_ i: Int) {
      nodes[i]?.prev = -1
      nodes[i]?.next = head
      if head >= 0 { nodes[head]?.prev = i }
      head = i
      if tail < 0 { tail = i }
    }

    mutating func remove(_ i: Int) {
      guard let node = nodes[i] else { return }
      unlink(i)
      index[node.key] = nil
      totalCost -= node.cost
      nodes[i] = nil
      free.append(i)
    }
  }

  public let budget: Int
  private let state = Mutex(State())

  /// - Parameter budget: the most the cached entries may cost together, in bytes.
  public init(budget: Int) {
    self.budget = max(0, budget)
  }

  /// The cached value for `key`, marking it most recently used; nil when absent.
  public func get(_ key: Key) -> Value? {
    state.withLock { s in
      guard let i = s.index[key], let node = s.nodes[i] else {
        s.stats.misses += 1
        return nil
      }
      s.stats.hits += 1
      s.unlink(i)
      s.pushFront(i)
      return node.value
    }
  }

  /// Caches `value` under `key` as most recently used, evicting least-recently-used entries
  /// until the total cost fits the budget.
  public func insert(_ key: Key, _ value: Value, cost: Int) {
    state.withLock { s in
      if let old = s.index[key] { s.remove(old) }
      let node = Node(key: key, value: value, cost: max(0, cost), prev: -1, next: -1)
      let i: Int
      if let reused = s.free.popLast() {
        i = reused
        s.nodes[i] = node
      } else {
        i = s.nodes.count
        s.nodes.append(node)
      }
      s.index[key] = i
      s.totalCost += node.cost
      s.pushFront(i)
      while s.totalCost > budget, s.tail >= 0, s.tail != i {
        s.remove(s.tail)
        s.stats.evictions += 1
      }
    }
  }

  /// The cached value for `key`, or the result of `load` (called without the lock held), which
  /// is then cached with `cost`.
  public func value(for key: Key, cost: Int, load: () throws -> Value) rethrows -> Value {
    if let hit = get(key) { return hit }
    let value = try load()
    insert(key, value, cost: cost)
    return value
  }

  public func remove(_ key: Key) {
    state.withLock { s in
      if let i = s.index[key] { s.remove(i) }
    }
  }

  public func removeAll() {
    state.withLock { s in s = State(stats: s.stats) }
  }

  public var count: Int { state.withLock { $0.index.count } }
  public var totalCost: Int { state.withLock { $0.totalCost } }
  public var statistics: Statistics { state.withLock { $0.stats } }

  /// Keys from most to least recently used (for tests and diagnostics).
  public var keysByRecency: [Key] {
    state.withLock { s in
      var keys: [Key] = []
      var i = s.head
      while i >= 0, let node = s.nodes[i] {
        keys.append(node.key)
        i = node.next
      }
      return keys
    }
  }
}
