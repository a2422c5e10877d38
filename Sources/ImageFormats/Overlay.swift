import Logging
import QCOW2
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// `--overlay`: a qcow2 image over any base, so that the base can be used writably without ever
/// being written.
public enum Overlay {
  /// Makes sure `overlay` exists: if missing, creates it as a qcow2 whose backing file is `base`
  /// (recorded by absolute path, with the base's format), sized like the base. An existing
  /// overlay is used as it is.
  public static func prepare(
    _ overlay: String, over base: String, options: OpenOptions = OpenOptions(), logger: Logger
  ) throws {
    if access(overlay, F_OK) == 0 { return }
    var options = options
    options.lock = true
    options.writable = false
    let chain = try ImageOpener.open(base, options: options, logger: logger)
    let baseLayer = chain.top
    try QCOW2Creator.create(
      at: overlay, virtualSize: baseLayer.virtualSize, backing: baseLayer.file.path,
      backingFormat: baseLayer.formatName)
    logger.info("created overlay \(overlay) over \(baseLayer.file.path) (\(baseLayer.formatName))")
  }
}
