import Logging
import QCOW2
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// Opens an image and its whole backing chain: resolves backing paths, picks each layer's
/// format, detects loops and over-deep chains, and shares one metadata cache across the chain.
public enum ImageOpener {
  /// Chains deeper than this are refused (a guard against runaway or hostile chains).
  public static let maxChainDepth = 64

  /// One layer's file and what we learned about it before constructing it.
  private struct Planned {
    var file: ImageFile
    var format: ImageFormat
    var header: QCOW2Header?
    var dataFile: ImageFile?
  }

  public static func open(_ path: String, options: OpenOptions, logger: Logger) throws -> LayerChain {
    // The daemon chdirs to /, so a relative path must be made absolute first.
    guard let top = realPath(path) else {
      throw VDiskError(.notFound, path: path, "image does not exist", errno: ENOENT)
    }

    // Headers top-down.
    var planned: [Planned] = []
    var seen: [FileIdentity: Int] = [:]
    var current = (path: top, format: options.format, explicit: options.format != nil)
    while true {
      let file = try ImageFile.open(current.path, writable: false)
      let identity = FileIdentity(device: file.device, inode: file.inode)
      if seen[identity] != nil {
        let names = planned.map(\.file.path) + [current.path]
        throw VDiskError.corrupt(top, "backing chain loops: \(names.joined(separator: " → "))")
      }
      seen[identity] = planned.count
      guard planned.count < maxChainDepth else {
        throw VDiskError.unsupported(top, "backing chain is deeper than \(maxChainDepth) layers")
      }
      let format = try resolveFormat(file, stated: current.format, explicit: current.explicit)
      var layer = Planned(file: file, format: format)
      var next: (path: String, format: ImageFormat?, explicit: Bool)?
      if format == .qcow2 {
        let header = try QCOW2Header(file: file)
        layer.header = header
        if let name = header.externalDataFileName {
          layer.dataFile = try openNamed(name, by: file.path, what: "external data file")
        }
        if options.openBacking, let name = header.backingFileName {
          let backingPath = resolve(name, relativeTo: file.path)
          guard access(backingPath, F_OK) == 0 else {
            throw VDiskError(
              .notFound, path: file.path,
              "backing file \(backingPath) (named \"\(name)\" by \(file.path)) does not exist", errno: ENOENT)
          }
          var backingFormat: ImageFormat?
          if let stated = header.backingFormat {
            guard let known = ImageFormat(rawValue: stated) else {
              throw VDiskError.unsupported(
                file.path, "backing file \(backingPath) has format \"\(stated)\", which is not supported")
            }
            backingFormat = known
          }
          next = (backingPath, backingFormat, backingFormat != nil)
        }
      }
      planned.append(layer)
      guard let next else { break }
      current = next
    }

    // One metadata cache for the whole chain.
    let qcow2Headers = planned.compactMap(\.header)
    let budget: Int
    if let size = options.cacheSize {
      budget = max(0, size)
    } else {
      let coverage = qcow2Headers.reduce(UInt64(0)) { sum, h in
        let (total, overflow) = sum.addingReportingOverflow(h.l2CoverageBytes)
        return overflow ? UInt64.max : total
      }
      let largestCluster = qcow2Headers.map { Int($0.clusterSize) }.max() ?? 0
      budget = max(Int(min(coverage, UInt64(defaultMetadataCacheCeiling))), largestCluster)
    }
    let cache = MetadataCache(budget: budget)

    // Layers bottom-up.
    var below: (any ImageLayer)?
    for layer in planned.reversed() {
      switch layer.format {
      case .raw:
        below = RawLayer(file: layer.file)
      case .qcow2:
        guard let header = layer.header else { continue }
        below = try QCOW2Layer(
          file: layer.file, header: header, backing: below, dataFile: layer.dataFile, metadataCache: cache,
          logger: logger)
      }
    }
    guard let topLayer = below else {
      throw VDiskError(.invalidArgument, path: top, "no layer could be opened")
    }
    return LayerChain(top: topLayer)
  }

  /// The format to open `file` as: the stated one (which must match the file's magic), else
  /// probed. Raw is taken only when stated, or when no magic matches.
  private static func resolveFormat(_ file: ImageFile, stated: ImageFormat?, explicit: Bool) throws
    -> ImageFormat
  {
    guard let stated, explicit else { return try probe(file) }
    let head = try ImageFormat.head(of: file)
    guard ImageFormat.matches(stated, head) else {
      throw VDiskError.corrupt(
        file.path, at: 0, "file is named as \(stated.rawValue) but does not have the \(stated.rawValue) magic"
      )
    }
    return stated
  }

  /// Opens a file an image names (relative names against that image's directory), read-only.
  private static func openNamed(_ name: String, by image: String, what: String) throws -> ImageFile {
    let path = resolve(name, relativeTo: image)
    guard access(path, F_OK) == 0 else {
      throw VDiskError(
        .notFound, path: image, "\(what) \(path) (named \"\(name)\" by \(image)) does not exist",
        errno: ENOENT)
    }
    return try ImageFile.open(path, writable: false)
  }

  /// `name` as a path: absolute names as they are, relative ones against the directory of
  /// `image` (QEMU's rule for backing and data file names).
  static func resolve(_ name: String, relativeTo image: String) -> String {
    if name.hasPrefix("/") { return name }
    guard let slash = image.lastIndex(of: "/") else { return name }
    return String(image[...slash]) + name
  }

  private static func realPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
  }

  private struct FileIdentity: Hashable {
    var device: UInt64
    var inode: UInt64
  }
}
