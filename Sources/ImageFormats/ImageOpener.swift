import Logging
import RemoteStore
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// Opens an image and its whole backing chain: resolves parent names against the directory of the
/// image that names them, takes the parent's format from what the child records (a recorded
/// format must match the file's magic; raw matches anything) or probes it (raw only as the last
/// resort), refuses chains deeper than 64 and chains that loop (by device and inode), opens
/// every layer below the top read-only, and shares one metadata cache across the chain.
///
/// Parent names are untrusted (docs/DESIGN.md, "Untrusted images"): a name must be a path, not a
/// protocol or `json:` (`LinkedFiles.checkName`); each parent is opened by its resolved path,
/// inside `backing_dir` when one is given; every file must be a regular file or a block device
/// (`ImageFile.open`); a raw top image whose format was probed refuses writes that would make it
/// probe as another format (`RawLayer.vet`).
public enum ImageOpener {
  public static let maxChainDepth = 64
  /// The most metadata a chain may hold in memory outside its cache (qcow2 L1 tables, VMDK grain
  /// directories, replayed VHDX logs; `LayerPlan.residentBytes`). Each format bounds one layer's
  /// (64 MiB of L1, 256 MiB of grain directories, a 256 MiB log), but 64 layers of them would
  /// not be bounded usefully; real images need a few KiB to MiB per layer.
  public static let maxResidentMetadata: UInt64 = 512 << 20

  public static func open(_ path: String, options: OpenOptions, logger: Logger) throws -> LayerChain {
    let remote = RemoteFiles(registry: options.stores, options: options.remote)
    // The daemon chdirs to /, so a relative path must be made absolute first.
    guard var top = remote.isRemote(path) ? path : LinkedFiles.realPath(path) else {
      throw VDiskError(.notFound, path: path, "image does not exist", errno: ENOENT)
    }
    // A bundle folder (a Parallels .hdd) opens by the file its format names in it.
    if !remote.isRemote(top), (try? FileDescriptorSource.fileType(atPath: top)) == .directory,
      let file = options.registry.drivers.lazy.compactMap({ $0.imageFile(inDirectory: top) }).first
    {
      top = file
    }

    let linked = LinkedFiles(directory: options.backingDirectory)
    _ = try linked.resolvedDirectory()

    // Plans top-down: each names the next.
    var plans: [LayerPlan] = []
    var resident: UInt64 = 0
    var seen = Set<FileIdentity>()
    var current: (path: String, format: (any FormatDriver.Type)?, name: String?) = (top, options.format, nil)
    while true {
      let isTop = plans.isEmpty
      let writable = isTop && options.writable
      let isRemote = remote.isRemote(current.path)
      let file =
        try isRemote
        ? remote.open(current.path, writable: writable) : ImageFile.open(current.path, writable: writable)
      if !isRemote, let name = current.name, let child = plans.last?.file.path {
        try linked.verifyOpened(file, name: name, what: "backing file", namedBy: child)
      }
      guard seen.insert(FileIdentity(device: file.device, inode: file.inode)).inserted else {
        let names = plans.map(\.file.path) + [current.path]
        throw VDiskError.corrupt(top, "backing chain loops: \(names.joined(separator: " → "))")
      }
      if options.lock {
        try ImageLock.acquire(writable ? .writer : .reader, on: file)
      }
      guard plans.count < maxChainDepth else {
        throw VDiskError.unsupported(top, "backing chain is deeper than \(maxChainDepth) layers")
      }
      let format = try resolveFormat(file, stated: current.format, registry: options.registry)
      var context = PlanContext(logger: logger, writable: writable, linkedFiles: linked, lock: options.lock)
      if isRemote {  // extent and data files of a remote image come from its store
        let image = file.path
        context.openFile = { path, writable in
          try remote.open(remote.resolve(path, relativeTo: image), writable: writable)
        }
      }
      let probedRaw = current.format == nil && ObjectIdentifier(format) == ObjectIdentifier(RawDriver.self)
      let plan =
        probedRaw
        ? RawDriver.plan(file, probedBy: options.registry) : try format.plan(file, context: context)
      resident = resident > UInt64.max - plan.residentBytes ? .max : resident + plan.residentBytes
      guard resident <= options.residentMetadataLimit else {
        throw VDiskError.unsupported(
          top,
          "the chain's metadata held in memory would pass \(options.residentMetadataLimit >> 20) MiB at \(file.path) (layer \(plans.count + 1))"
        )
      }
      plans.append(plan)
      guard options.openBacking, let parent = plan.parent else { break }
      let located = try locate(
        parent, namedBy: file.path, registry: options.registry, linked: linked, remote: remote,
        allowRemote: options.allowRemoteBacking)
      current = (located.path, located.format, parent.recordedName)
    }

    // One metadata cache for the whole chain: what covers it, at most 32 MiB (like QEMU); or
    // exactly --cache-size. (The cache keeps one table even over budget, so 0 still works.)
    let budget: Int
    if let size = options.cacheSize {
      budget = max(0, size)
    } else {
      let coverage = plans.reduce(UInt64(0)) { sum, plan in
        let (total, overflow) = sum.addingReportingOverflow(plan.metadataCoverage)
        return overflow ? UInt64.max : total
      }
      budget = Int(min(coverage, UInt64(defaultMetadataCacheCeiling)))
    }
    let cache = MetadataCache(budget: budget)

    // Layers bottom-up, each checked by its child's expectations of it.
    var below: (any ImageLayer)?
    for (index, plan) in plans.enumerated().reversed() {
      if let below, let validate = plan.parent?.validate, index + 1 < plans.count {
        try validate(below)
      }
      below = try plan.build(below, cache)
    }
    guard let topLayer = below else {
      throw VDiskError(.invalidArgument, path: top, "no layer could be opened")
    }
    return LayerChain(top: topLayer)
  }

  /// The resolved path of the first existing candidate of `parent` (inside `backing_dir` when
  /// given), with the format its child records. A name that is not a path is refused first.
  private static func locate(
    _ parent: ParentReference, namedBy image: String, registry: FormatRegistry, linked: LinkedFiles,
    remote: RemoteFiles, allowRemote: Bool
  )
    throws -> (path: String, format: (any FormatDriver.Type)?)
  {
    let imageIsRemote = remote.isRemote(image)
    let namesRemote = remote.isRemote(parent.recordedName)
    if namesRemote, !imageIsRemote, !allowRemote || linked.directory != nil {
      throw VDiskError(
        .notPermitted, path: image,
        "backing file \"\(parent.recordedName)\" is in a remote store; a local image may name one only with -o remote_backing (and without backing_dir)"
      )
    }
    if !namesRemote {
      try LinkedFiles.checkName(parent.recordedName, what: "backing file", namedBy: image)
    }
    var format: (any FormatDriver.Type)?
    if let stated = parent.format {
      guard let known = registry.driver(named: stated) else {
        throw VDiskError.unsupported(
          image, "backing file \"\(parent.recordedName)\" has format \"\(stated)\", which is not supported")
      }
      format = known
    }
    if imageIsRemote || namesRemote {
      return (try locateRemote(parent, namedBy: image, remote: remote), format)
    }
    let existing = parent.candidates.filter { access($0, F_OK) == 0 }
    guard !existing.isEmpty else {
      let tried = parent.candidates.isEmpty ? "no path" : parent.candidates.joined(separator: ", ")
      throw VDiskError(
        .notFound, path: image,
        "backing file \(tried) (named \"\(parent.recordedName)\" by \(image)) does not exist", errno: ENOENT)
    }
    // With backing_dir, a candidate outside it is passed over for the next (a VHDX locator's
    // relative path inside it beats its absolute one outside); none inside is refused.
    var refusal: VDiskError?
    for candidate in existing {
      do {
        return (
          try linked.admit(candidate, name: parent.recordedName, what: "backing file", namedBy: image), format
        )
      } catch let error as VDiskError where error.kind == .notPermitted {
        refusal = refusal ?? error
      }
    }
    throw refusal ?? VDiskError(.notPermitted, path: image, "no backing file candidate is allowed")
  }

  /// The first candidate of `parent` that opens in the store of `image` (or the remote location
  /// it names). Names of a remote image never lead to local files.
  private static func locateRemote(_ parent: ParentReference, namedBy image: String, remote: RemoteFiles)
    throws
    -> String
  {
    let candidates =
      remote.isRemote(parent.recordedName)
      ? [parent.recordedName] : parent.candidates.map { remote.resolve($0, relativeTo: image) }
    var firstError: (any Error)?
    for candidate in candidates where remote.isRemote(candidate) {
      do {
        _ = try remote.open(candidate, writable: false)
        return candidate
      } catch let error as VDiskError where error.kind == .notFound {
        firstError = firstError ?? error
      }
    }
    throw firstError
      ?? VDiskError(
        .notFound, path: image, "backing file \"\(parent.recordedName)\" named by \(image) does not exist",
        errno: ENOENT)
  }

  /// A stated format must match the file's magic (raw matches anything); nil means probe.
  private static func resolveFormat(
    _ file: ImageFile, stated: (any FormatDriver.Type)?, registry: FormatRegistry
  ) throws -> any FormatDriver.Type {
    guard let stated else { return try registry.probe(file) }
    guard stated.matches(try ProbeBytes(file)) else {
      throw VDiskError.corrupt(
        file.path, at: 0, "file is named as \(stated.name) but does not have the \(stated.name) magic")
    }
    return stated
  }

  /// The format `file`'s magic says, by the standard registry (see `FormatRegistry.probe`).
  public static func probe(_ file: ImageFile) throws -> any FormatDriver.Type {
    try FormatRegistry.standard.probe(file)
  }

  static func resolve(_ name: String, relativeTo image: String) -> String {
    PlanContext.resolve(name, relativeTo: image)
  }

  private struct FileIdentity: Hashable {
    var device: UInt64
    var inode: UInt64
  }
}
