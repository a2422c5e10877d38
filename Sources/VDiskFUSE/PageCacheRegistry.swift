import Synchronization
import VDiskCore

/// Which inodes of writable views may hold pages in the kernel's page cache, and which bytes each
/// shows, so that a change is followed by invalidating exactly the stale pages.
///
/// Views keep their pages across opens (`keep_cache`), so pages outlive the handles that read
/// them. Every change to a mounted image passes through this mount (QEMU-compatible locks keep
/// other writers out), and views alias each other: `partitions/pN.raw` shows a byte range of
/// `disk.raw`. The kernel itself keeps the inode a change came through right when the change went
/// through the page cache (a buffered write updates its pages; fallocate and truncate drop theirs);
/// everything else must be told: the other inodes that show the bytes, and the inode itself after
/// a direct-I/O write.
///
/// Deadlock rule (see `CacheInvalidator`): an invalidation waits for locked pages, and a buffered
/// write holds its pages locked until its reply. So only one inode per shared content may take
/// page-cache writes — the whole view (`disk.raw`); writers of a slice of it (a partition) are
/// opened with direct I/O (`fuseOpen`). An invalidation that never touches such an inode
/// waits only for reads, which the workers always answer.
final class PageCacheRegistry: Sendable {
  struct Entry {
    /// The content whose bytes the inode shows (a slice's parent), by identity.
    var base: ObjectIdentifier
    /// Where the inode's bytes start in `base`, and how many it shows (unbounded for a whole view,
    /// whose size may change).
    var offset: UInt64
    var length: UInt64
    /// Open handles that use the page cache.
    var opens: Int
    /// The kernel may hold this inode's pages locked across a write request (buffered writes).
    var takesPageCacheWrites: Bool
  }

  /// Stale pages of one inode: `length` bytes at `offset` (length 0: to the end of the file).
  struct Notice: Hashable {
    var inode: UInt64
    var offset: UInt64
    var length: UInt64
  }

  /// What to tell the kernel after one change.
  struct Job: Equatable {
    var notices: [Notice]
    /// Some notice is for an inode that takes page-cache writes: it may wait for a buffered
    /// write's reply, so it must not run on the lane that such replies wait for.
    var mayWaitForWriters: Bool
  }

  private let entries = Mutex<[UInt64: Entry]>([:])
  /// `entries.count`, read without the lock by every change (a write with nothing cached, the
  /// common case under fio or a VM, takes no lock).
  private let count = Atomic<Int>(0)

  /// Where `view` shows bytes: its base content and the offset and length in it.
  static func placement(of view: DiskView) -> (base: ObjectIdentifier, offset: UInt64, length: UInt64) {
    var content: any ByteView = view.content
    var offset: UInt64 = 0
    var length = UInt64.max
    while let slice = content as? SliceView {
      offset &+= slice.offset
      length = min(length, slice.size)
      content = slice.parent
    }
    return (ObjectIdentifier(content), offset, length)
  }

  /// Whether writes to `view` may go through the page cache: only a writable whole view (see the
  /// deadlock rule above).
  static func allowsPageCacheWrites(_ view: DiskView) -> Bool {
    view.writable && !(view.content is SliceView)
  }

  /// A handle of writable `view` that uses the page cache was opened on `inode`. Call before the
  /// open is answered (no page can be cached before).
  func opened(_ inode: UInt64, view: DiskView) {
    let (base, offset, length) = Self.placement(of: view)
    entries.withLock { e in
      var entry =
        e[inode]
        ?? Entry(
          base: base, offset: offset, length: length, opens: 0,
          takesPageCacheWrites: Self.allowsPageCacheWrites(view))
      entry.opens += 1
      e[inode] = entry
      count.store(e.count, ordering: .sequentiallyConsistent)
    }
  }

  /// Such a handle was released; its pages stay cached (`keep_cache`).
  func closed(_ inode: UInt64) {
    entries.withLock { e in
      if let entry = e[inode], entry.opens > 0 { e[inode]?.opens = entry.opens - 1 }
    }
  }

  /// The pages to drop after bytes `range` of `view` changed through `inode`; nil when none
  /// (the change can be answered at once). `kernelKeepsOwnPages`: the kernel already keeps the
  /// pages of `inode` itself right (a write through the page cache, fallocate, truncate).
  ///
  /// An inode with no open handle left is dropped whole and forgotten: until it is opened again
  /// nothing can cache it (the open registers it before it is answered), so later changes cost
  /// nothing. A read that raced with the change has its pages locked until answered, and the
  /// invalidation waits for them.
  func job(changed view: DiskView, _ range: Range<UInt64>, through inode: UInt64, kernelKeepsOwnPages: Bool)
    -> Job?
  {
    // An open registered after this load is answered after the data was written: what it
    // caches is new.
    guard !range.isEmpty, count.load(ordering: .sequentiallyConsistent) > 0 else { return nil }
    let (base, offset, _) = Self.placement(of: view)
    let (low, lowOverflow) = range.lowerBound.addingReportingOverflow(offset)
    let (high, highOverflow) = range.upperBound.addingReportingOverflow(offset)
    let absolute = low..<(lowOverflow ? UInt64.max : highOverflow ? UInt64.max : high)
    return entries.withLock { e -> Job? in
      var job = Job(notices: [], mayWaitForWriters: false)
      for (other, entry) in e where entry.base == base {
        if other == inode && kernelKeepsOwnPages { continue }
        let end = entry.length == .max ? UInt64.max : entry.offset &+ entry.length
        let shown = entry.offset..<max(entry.offset, end)
        guard absolute.overlaps(shown) else { continue }
        if entry.opens == 0 {
          job.notices.append(Notice(inode: other, offset: 0, length: 0))
          e[other] = nil
        } else {
          let from = max(absolute.lowerBound, shown.lowerBound)
          let to = min(absolute.upperBound, shown.upperBound)
          job.notices.append(Notice(inode: other, offset: from - entry.offset, length: to - from))
        }
        if entry.takesPageCacheWrites { job.mayWaitForWriters = true }
      }
      count.store(e.count, ordering: .sequentiallyConsistent)
      return job.notices.isEmpty ? nil : job
    }
  }
}
