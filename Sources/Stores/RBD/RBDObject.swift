import CRBD
import RemoteStore
import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// An RBD image head or snapshot as a `RemoteObject`. A snapshot, and a head opened read-only,
/// are read with librbd's read-only open; a head opened read-write holds the image's exclusive
/// lock (refused when a live client holds it) until the object is released, and can be
/// written, flushed and resized.
///
/// Versions: a snapshot never changes, and a locked head changes only through this object. A
/// head opened read-only takes no lock and registers no watch (so it never stands in a
/// writer's way), so it sees another client's writes and resizes as they happen, unnoticed:
/// its tag (`@head`) names no content version, and a persistent cache must not keep its blocks
/// across opens. Mount a snapshot for a stable view of an image in use. Reads and writes go straight to librbd, whose image handle is
/// safe to use from several threads (hence `@unchecked`: the rest is constant or atomic).
public final class RBDObject: RemoteObject, @unchecked Sendable {
  public let location: String
  /// The size at open, and `rbd:<image id>@<snapshot id or head>`.
  public let version: RemoteVersion
  public let parallelism: Int
  public let isWritable: Bool
  /// The image's size now (it changes with `resize`).
  public var currentSize: UInt64 { size.load(ordering: .acquiring) }

  /// The librbd handles: opened at `init`, let go of before the mount forks (`release`), and
  /// opened again on first use in the child (`handle`), where librados' threads do not exist.
  private let handles: Mutex<RBDConnection?>
  private let parsed: RBDLocation
  private let options: RemoteOptions
  private let size: Atomic<UInt64>

  /// librbd reads and writes at most this much per call (its length results are `ssize_t`,
  /// some paths count in `int`).
  private static let chunk = 64 << 20

  init(_ parsed: RBDLocation, location: String, writable: Bool, options: RemoteOptions) throws(VDiskError) {
    let opened = try Self.connect(parsed, location: location, writable: writable, options: options)
    self.location = location
    self.parsed = parsed
    self.options = options
    handles = Mutex(opened.connection)
    version = RemoteVersion(size: opened.size, tag: opened.tag, identifiesContent: parsed.snapshot != nil)
    size = Atomic(opened.size)
    parallelism = max(1, options.connections)
    isWritable = writable
    RBDStore.live.withLock { $0[ObjectIdentifier(self)] = WeakObject(self) }
  }

  deinit { RBDStore.live.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(self)) } }

  /// Connects, opens the image (or snapshot) and, writable, takes the exclusive lock.
  private static func connect(
    _ parsed: RBDLocation, location: String, writable: Bool, options: RemoteOptions
  ) throws(VDiskError) -> (connection: RBDConnection, size: UInt64, tag: String) {
    let readOnly = !writable || parsed.snapshot != nil
    let connection = try RBDConnection(
      pool: parsed.pool, namespace: parsed.namespace, location: location, options: options, readOnly: readOnly
    )
    guard let ioctx = connection.ioctx else { throw VDiskError(.io, path: location, "no pool context") }
    var handle: rbd_image_t?
    let opened =
      readOnly
      ? rbd_open_read_only(ioctx, parsed.image, &handle, nil) : rbd_open(ioctx, parsed.image, &handle, nil)
    guard opened == 0, let handle else {
      if opened == -ENOENT {
        throw VDiskError(
          .notFound, path: location,
          "image \(parsed.image) does not exist in \(parsed.namespace == nil ? "pool" : "namespace") \(parsed.poolAndNamespace)"
        )
      }
      throw VDiskError(
        .io, path: location, "cannot open image \(parsed.image): \(rbdMessage(opened))", errno: EIO)
    }
    connection.image = handle

    var snapshotTag = "head"
    if let snapshot = parsed.snapshot {
      var id: UInt64 = 0
      let found = rbd_snap_get_id(handle, snapshot, &id)
      if found == -ENOENT {
        throw VDiskError(
          .notFound, path: location, "snapshot \(snapshot) of image \(parsed.image) does not exist")
      }
      guard found == 0 else {
        throw VDiskError(.io, path: location, "cannot look up snapshot \(snapshot): \(rbdMessage(found))")
      }
      let set = rbd_snap_set(handle, snapshot)
      guard set == 0 else {
        throw VDiskError(.io, path: location, "cannot open snapshot \(snapshot): \(rbdMessage(set))")
      }
      if writable { throw VDiskError(.readOnly, path: location, "an RBD snapshot is read-only") }
      snapshotTag = String(id)
    }

    var bytes: UInt64 = 0
    let sized = rbd_get_size(handle, &bytes)
    guard sized == 0 else {
      throw VDiskError(.io, path: location, "cannot read the image size: \(rbdMessage(sized))")
    }
    guard bytes <= UInt64(Int64.max) else {
      throw VDiskError(.corrupt, path: location, "librbd reports an image size of \(bytes) bytes")
    }
    let id = try imageID(handle, location: location)
    if writable { try takeExclusiveLock(connection, handle, location: location) }
    return (connection, bytes, "rbd:\(id)@\(snapshotTag)")
  }

  /// Closes the handles (releasing the exclusive lock): called before the mount forks.
  func release() { handles.withLock { $0 = nil } }

  /// The open image, reconnecting after `release` to the same image (same id and snapshot, and
  /// for a writable head the lock again). A failed reconnect is transient: the next call tries again.
  private func handle() throws -> rbd_image_t {
    try handles.withLock { connection in
      if let image = connection?.image { return image }
      let opened: (connection: RBDConnection, size: UInt64, tag: String)
      do {
        opened = try Self.connect(parsed, location: location, writable: isWritable, options: options)
      } catch {
        throw RemoteFailure(.transient, location: location, "reconnecting: \(error)")
      }
      guard opened.tag == version.tag, let image = opened.connection.image else {
        throw RemoteFailure(.changed, location: location, "the image was replaced (now \(opened.tag))")
      }
      connection = opened.connection
      return image
    }
  }

  public func fetch(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
    let end = currentSize
    guard offset < end, let base = buffer.baseAddress else { return 0 }
    let image = try handle()
    let count = Int(min(UInt64(buffer.count), end - offset))
    var done = 0
    while done < count {
      let length = min(count - done, Self.chunk)
      let read = rbd_read2(image, offset + UInt64(done), length, base + done, 0)
      guard read >= 0 else {
        throw rbdFailure(read, location: location, "reading \(length) bytes at \(offset + UInt64(done))")
      }
      guard read > 0, read <= length else {
        throw RemoteFailure(
          .final(.io), location: location,
          "librbd returned \(read) bytes for a read of \(length) within the image")
      }
      done += read
    }
    return done
  }

  public func store(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
    guard isWritable else { throw VDiskError(.readOnly, path: location, "is read-only") }
    let end = offset.addingReportingOverflow(UInt64(buffer.count))
    guard !end.overflow, end.partialValue <= currentSize else {
      throw RemoteFailure(
        .final(.invalidArgument), location: location,
        "a write of \(buffer.count) bytes at \(offset) passes the image's end (\(currentSize) bytes)")
    }
    guard let base = buffer.baseAddress else { return }
    let image = try handle()
    var done = 0
    while done < buffer.count {
      let length = min(buffer.count - done, Self.chunk)
      let written = rbd_write2(image, offset + UInt64(done), length, base + done, 0)
      guard written >= 0 else {
        throw rbdFailure(written, location: location, "writing \(length) bytes at \(offset + UInt64(done))")
      }
      guard written == length else {
        throw RemoteFailure(.final(.io), location: location, "librbd wrote \(written) of \(length) bytes")
      }
      done += length
    }
  }

  public func flush() throws {
    guard isWritable else { return }
    let flushed = rbd_flush(try handle())
    guard flushed == 0 else { throw rbdFailure(flushed, location: location, "flushing") }
  }

  public func resize(to newSize: UInt64) throws {
    guard isWritable else { throw VDiskError(.readOnly, path: location, "is read-only") }
    guard newSize <= UInt64(Int64.max) else {
      throw RemoteFailure(.final(.invalidArgument), location: location, "cannot resize to \(newSize) bytes")
    }
    let resized = rbd_resize(try handle(), newSize)
    guard resized == 0 else { throw rbdFailure(resized, location: location, "resizing to \(newSize) bytes") }
    size.store(newSize, ordering: .releasing)
  }
}
