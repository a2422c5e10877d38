import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// One object in a remote store (an S3 object, an HTTP resource, an RBD image or snapshot) as the
/// block cache sees it: a size and a version fixed when it was opened, ranged fetches, and for an
/// RBD image head, writes. A store implements this and nothing else; `CachedRemoteSource` turns it
/// into the `ByteSource` an `ImageFile` reads, with the cache, prefetch, coalescing and retries.
public protocol RemoteObject: AnyObject, Sendable {
  /// The location as the user or the naming image gave it (`s3://bucket/key`): errors name it.
  var location: String { get }
  /// What the object was when opened: its size, and a tag that changes when its content does
  /// (an ETag; an RBD image id and snapshot id). Keys the persistent cache.
  var version: RemoteVersion { get }
  /// How many fetches may run at once (the store's connection pool).
  var parallelism: Int { get }
  /// Whether `store`, `resize` and `flush` may be called (an RBD image head opened read-write).
  var isWritable: Bool { get }

  /// Reads `buffer.count` bytes at `offset` (fewer only where the object ends). Throws
  /// `RemoteFailure`: `.transient` ones are retried by the caller; `.changed` when the object is
  /// no longer `version` (a fetch must check, never return bytes of another version).
  func fetch(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int

  /// Writes `buffer` at `offset` (within the current size).
  func store(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws
  /// Makes what was stored durable.
  func flush() throws
  /// Grows or cuts the object to `size` bytes.
  func resize(to size: UInt64) throws
}

extension RemoteObject {
  public var isWritable: Bool { false }
  public func store(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
    throw VDiskError(.readOnly, path: location, "is read-only")
  }
  public func flush() throws {}
  public func resize(to size: UInt64) throws {
    throw VDiskError(.readOnly, path: location, "is read-only")
  }
}

/// What an object was when it was opened.
public struct RemoteVersion: Hashable, Sendable {
  public var size: UInt64
  /// ETag, or RBD image id and snapshot id; never empty.
  public var tag: String
  /// Whether the tag names this content and no other (an ETag, an RBD snapshot). An RBD image
  /// head's tag does not (another client may write it): its blocks are not kept in `cache_dir`.
  public var identifiesContent: Bool

  public init(size: UInt64, tag: String, identifiesContent: Bool = true) {
    self.size = size
    self.tag = tag
    self.identifiesContent = identifiesContent
  }
}

/// Why a remote call failed. `transient` (a timeout, a refused connection, a 5xx) may succeed on a
/// retry; `changed` means the object is not the version that was opened; anything else is final.
/// Turned into a `VDiskError` (`.io`, or the kind given) once the retries are spent.
public struct RemoteFailure: Error, CustomStringConvertible, Sendable {
  public enum Kind: Sendable, Equatable {
    case transient
    case changed
    case final(VDiskError.Kind)
  }
  public var kind: Kind
  public var location: String
  public var detail: String

  public init(_ kind: Kind, location: String, _ detail: String) {
    self.kind = kind
    self.location = location
    self.detail = detail
  }

  public var description: String { "\(location): \(detail)" }

  public var asVDiskError: VDiskError {
    switch kind {
    case .transient, .changed: VDiskError(.io, path: location, detail, errno: EIO)
    case .final(let kind): VDiskError(kind, path: location, detail)
    }
  }
}
