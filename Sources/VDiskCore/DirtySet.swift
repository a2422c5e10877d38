/// Metadata a writer changed in memory and has not written back yet (dirty table pages, L1
/// entries), each key with the generation of its last change. A write-back takes `sorted`
/// under the writer's mutex, writes without it, then `clean`s what it wrote: a key changed again
/// meanwhile has a newer generation and stays dirty, so that change is written by the next
/// write-back (VDI, QED and Parallels writers; `DataFirstWriteback` orders the steps).
public struct DirtySet<Key: Hashable & Comparable, Detail> {
  /// One dirty key as a write-back sees it.
  public struct Entry {
    public let key: Key
    /// What the writer needs to find the key's bytes (a table's offset, ...).
    public let detail: Detail
    public let generation: UInt64
  }

  private var entries: [Key: (detail: Detail, generation: UInt64)] = [:]
  private var generation: UInt64 = 0

  public init() {}

  public var isEmpty: Bool { entries.isEmpty }

  public var count: Int { entries.count }

  /// Marks `key` changed now.
  public mutating func mark(_ key: Key, _ detail: Detail) {
    generation += 1
    entries[key] = (detail, generation)
  }

  /// The dirty keys in ascending order (the order their bytes lie in the file, for the writers
  /// whose keys are offsets or indices).
  public var sorted: [Entry] {
    entries.sorted { $0.key < $1.key }.map {
      Entry(key: $0.key, detail: $0.value.detail, generation: $0.value.generation)
    }
  }

  /// Forgets `entry` if its key has not changed since the write-back took it; true when it did
  /// (the caller then marks the cached bytes clean).
  @discardableResult
  public mutating func clean(_ entry: Entry) -> Bool {
    guard entries[entry.key]?.generation == entry.generation else { return false }
    entries[entry.key] = nil
    return true
  }
}

extension DirtySet where Detail == Void {
  /// Marks `key` changed now.
  public mutating func mark(_ key: Key) { mark(key, ()) }
}

extension DirtySet: Sendable where Key: Sendable, Detail: Sendable {}
extension DirtySet.Entry: Sendable where Key: Sendable, Detail: Sendable {}
