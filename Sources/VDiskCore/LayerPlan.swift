import Logging

#if canImport(Glibc)
  import Glibc
#endif

/// A parent (backing) image that a layer names: a qcow2 backing file, a VMDK parentFileNameHint,
/// a VHD/VHDX parent locator.
public struct ParentReference: Sendable {
  /// The name as the image records it (for messages and `info`).
  public var recordedName: String
  /// Absolute paths to try, in order; the first that exists is opened.
  public var candidates: [String]
  /// The format the image records for its parent (`qcow2`, `raw`, `vmdk`, …); nil = probe.
  public var format: String?
  /// Checks the opened parent against what the child expects (VMDK parentCID, VHD parent UUID);
  /// throws a `VDiskError` naming both files on a mismatch.
  public var validate: (@Sendable (any ImageLayer) throws -> Void)?

  public init(
    recordedName: String, candidates: [String], format: String? = nil,
    validate: (@Sendable (any ImageLayer) throws -> Void)? = nil
  ) {
    self.recordedName = recordedName
    self.candidates = candidates
    self.format = format
    self.validate = validate
  }
}

/// What a format driver learned from one file's metadata, before its layer exists. The opener
/// walks plans top-down (to find parents), then builds layers bottom-up (each needs its backing).
public struct LayerPlan: Sendable {
  public typealias Builder =
    @Sendable (_ backing: (any ImageLayer)?, _ cache: MetadataCache) throws -> any ImageLayer

  public var file: ImageFile
  public var parent: ParentReference?
  /// Bytes of metadata tables that cover the whole image (for the default cache budget).
  public var metadataCoverage: UInt64
  /// Bytes of metadata the layer holds in memory outside the chain's cache (a qcow2 L1 table,
  /// VMDK grain directories, a replayed VHDX log): the opener bounds their sum over the chain.
  public var residentBytes: UInt64
  public var build: Builder

  public init(
    file: ImageFile, parent: ParentReference?, metadataCoverage: UInt64 = 0, residentBytes: UInt64 = 0,
    build: @escaping Builder
  ) {
    self.file = file
    self.parent = parent
    self.metadataCoverage = metadataCoverage
    self.residentBytes = residentBytes
    self.build = build
  }
}

/// What a driver may use while planning a layer.
public struct PlanContext: Sendable {
  public var logger: Logger
  /// Whether this layer is the top of the chain and is to be opened for writing.
  public var writable: Bool
  /// What files the image may name (paths only; inside `backing_dir` when given).
  public var linkedFiles: LinkedFiles
  /// Where files the image names come from, by resolved path and writability; nil = the file
  /// system (`ImageFile.open`, after `linkedFiles` admits the path). The fuzz harness serves them
  /// from memory or refuses them (never the host's files); a remote store serves them from there.
  public var openFile: (@Sendable (_ path: String, _ writable: Bool) throws -> ImageFile)?
  /// Take QEMU's image locks on every file the image names (`openRelated`), as the opener takes
  /// them on the image itself: a writer's on a file opened for writing, a reader's otherwise.
  /// QEMU locks a VMDK's extents, a qcow2's data file and the image a Parallels bundle's
  /// storages hold the same way, each being a file node of its own.
  public var lock: Bool

  public init(
    logger: Logger, writable: Bool = false, linkedFiles: LinkedFiles = LinkedFiles(),
    openFile: (@Sendable (_ path: String, _ writable: Bool) throws -> ImageFile)? = nil, lock: Bool = false
  ) {
    self.logger = logger
    self.writable = writable
    self.linkedFiles = linkedFiles
    self.openFile = openFile
    self.lock = lock
  }

  /// `name` (as an image records it) resolved against the directory of `image`; absolute names
  /// stay as they are.
  public static func resolve(_ name: String, relativeTo image: String) -> String {
    if name.hasPrefix("/") { return name }
    guard let slash = image.lastIndex(of: "/") else { return name }
    return String(image[...slash]) + name
  }

  /// Opens a file an image names (extent file, external data file) read-only, or throws
  /// `.notFound` naming the path tried and the image that named it. The name must be a path
  /// and, with `backing_dir`, resolve inside it (`LinkedFiles`); the file is opened by its
  /// resolved path, through `openFile` when it is set.
  public func openRelated(_ name: String, by image: String, what: String, writable: Bool = false) throws
    -> ImageFile
  {
    try LinkedFiles.checkName(name, what: what, namedBy: image)
    let path = Self.resolve(name, relativeTo: image)
    let file: ImageFile
    if let openFile {
      file = try openFile(path, writable)
    } else {
      guard Syscalls.exists(path) else {
        throw VDiskError(
          .notFound, path: image, "\(what) \(path) (named \"\(name)\" by \(image)) does not exist",
          errno: ENOENT)
      }
      let resolved = try linkedFiles.admit(path, name: name, what: what, namedBy: image)
      file = try ImageFile.open(resolved, writable: writable)
      try linkedFiles.verifyOpened(file, name: name, what: what, namedBy: image)
    }
    if lock { try ImageLock.acquire(writable ? .writer : .reader, on: file) }
    return file
  }
}
