import ImageFormats
import Logging
import VDiskCore

/// How the CLI opens the chain for a mount: read-write when asked and possible, else read-only
/// with one line saying why (the way mount(8) treats a write-protected device). `nobacking` is
/// always read-only: without the backing chain, a write would copy zeros instead of the backing
/// file's bytes into the top image, changing what the image means.
enum MountOpening {
  struct Opened {
    var chain: LayerChain
    var writable: Bool
  }

  static func open(
    _ image: String, options base: OpenOptions, wantWrite: Bool, forceShare: Bool, logger: Logger
  )
    throws -> Opened
  {
    var options = base
    options.lock = !forceShare
    // Why the mount is read-only, said once the read-only open succeeded: a bad image gets its
    // one error, not a notice first.
    var why: String?
    if wantWrite, !options.openBacking {
      why =
        "\(image): nobacking opens the top image without its backing files, mounting read-only (a write would copy zeros, not the backing data, into the image)"
    } else if wantWrite {
      options.writable = true
      do {
        let chain = try ImageOpener.open(image, options: options, logger: logger)
        if chain.top is any WritableLayer {
          return Opened(chain: chain, writable: true)
        }
        why = "\(image): writing \(chain.top.formatName) images is not supported yet, mounting read-only"
      } catch let error as VDiskError where error.kind == .readOnly {
        if error.errno != nil {  // the file itself cannot be opened for writing
          why = "\(image) is write-protected (\(error.detail)), mounting read-only"
        } else {  // a format or image rule refuses writes (stream-optimized vmdk, damaged map, …)
          why = "\(error.path): \(error.detail); mounting read-only"
        }
      }
    }
    options.writable = false
    let chain = try ImageOpener.open(image, options: options, logger: logger)
    if let why { logger.notice("\(why)") }
    return Opened(chain: chain, writable: false)
  }
}
