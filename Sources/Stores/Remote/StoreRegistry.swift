import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// The remote stores images may be opened from, by location prefix (`rbd:`, `s3://`, `http://`,
/// `https://`). `StoreRegistry.standard` (Sources/Stores/Registry) lists the stores vdiskfs
/// serves: a new store is one folder under Sources/Stores, one line in Package.swift's `stores`
/// and one line there. Opening with `.none` (the default of `OpenOptions`) opens local files only.
public struct StoreRegistry: Sendable {
  public var stores: [any RemoteStoreKind.Type]

  public init(stores: [any RemoteStoreKind.Type]) {
    self.stores = stores
  }

  /// No remote store: every name is a local path.
  public static let none = StoreRegistry(stores: [])

  /// The store serving `location`, nil for a local path.
  public func store(for location: String) -> (any RemoteStoreKind.Type)? {
    stores.first { store in store.prefixes.contains { location.hasPrefix($0) } }
  }

  /// Lets every store prepare for the mount's fork into the background.
  public func prepareForFork() {
    for store in stores { store.prepareForFork() }
  }

  /// Every prefix the registry serves, for help texts.
  public var prefixes: [String] { stores.flatMap { $0.prefixes } }
}

/// Opens remote files of one chain: each object through its store, as a `CachedRemoteSource`
/// over one block cache for the whole chain.
public final class RemoteFiles: Sendable {
  public let registry: StoreRegistry
  public let options: RemoteOptions
  public let cache: BlockCache

  public init(registry: StoreRegistry, options: RemoteOptions) {
    self.registry = registry
    self.options = options
    cache = BlockCache(budget: options.cacheBytes)
  }

  public func isRemote(_ location: String) -> Bool { registry.store(for: location) != nil }

  /// Opens `location` (which `isRemote`) as an image file named by its location.
  public func open(_ location: String, writable: Bool) throws -> ImageFile {
    guard let store = registry.store(for: location) else {
      throw VDiskError.unsupported(location, "no store serves this location")
    }
    let object = try store.open(location, writable: writable, options: options)
    guard !writable || object.isWritable else {
      throw VDiskError(
        .readOnly, path: location,
        "a read-only store; --overlay LOCAL.qcow2 gives a writable view", errno: EROFS)
    }
    let source = CachedRemoteSource(object, cache: cache, options: options)
    return try ImageFile(source: source, path: location, isWritable: writable)
  }

  /// `name`, recorded by the image at `image`, resolved where that image lives: a remote image's
  /// names (relative or absolute) resolve in its store; a local image's are local paths, or
  /// remote locations as they stand.
  ///
  /// The formats join a relative name to the image's location the way they join paths
  /// (`PlanContext.resolve`: after its last '/'), so a name may arrive here already joined. That
  /// is undone, and the store resolves the name itself: a URL's last '/' may be inside its query
  /// string (a presigned URL's), and RBD has no folders.
  public func resolve(_ name: String, relativeTo image: String) -> String {
    guard let store = registry.store(for: image) else {
      return isRemote(name) ? name : PlanContext.resolve(name, relativeTo: image)
    }
    if let slash = image.lastIndex(of: "/"), name.hasPrefix(image[...slash]),
      name.count > image[...slash].count
    {
      return store.resolve(String(name.dropFirst(image[...slash].count)), relativeTo: image)
    }
    return isRemote(name) ? name : store.resolve(name, relativeTo: image)
  }
}
