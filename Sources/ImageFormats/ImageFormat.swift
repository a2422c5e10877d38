import QCOW2
import VDI
import VDiskCore
import VHD
import VHDX
import VMDK

/// The image formats vdiskfs opens, named as `qemu-img` names them.
public enum ImageFormat: String, Sendable, CaseIterable {
  case qcow2
  case raw
  case vmdk
  case vhdx
  case vpc
  case vdi

  /// Whether the probe bytes carry this format's magic (raw has none: always true).
  func matches(_ probe: ProbeBytes) -> Bool {
    switch self {
    case .qcow2: QCOW2Driver.matches(head: probe.head)
    case .raw: true
    case .vmdk: VMDKDriver.matches(probe)
    case .vhdx: VHDXDriver.matches(probe)
    case .vpc: VHDDriver.matches(probe)
    case .vdi: VDIDriver.matches(probe)
    }
  }

  /// Asks this format's driver to plan a layer for `file`.
  func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    switch self {
    case .qcow2: try QCOW2Driver.plan(file, context: context)
    case .raw: RawLayer.plan(file)
    case .vmdk: try VMDKDriver.plan(file, context: context)
    case .vhdx: try VHDXDriver.plan(file, context: context)
    case .vpc: try VHDDriver.plan(file, context: context)
    case .vdi: try VDIDriver.plan(file, context: context)
    }
  }
}

/// What to open and how (`--format`, `--cache-size`, whether to open backing files).
public struct OpenOptions: Sendable {
  /// `--format`; nil = probe.
  public var format: ImageFormat?
  /// `--cache-size` in bytes; nil = the default (what covers the chain, at most 32 MiB).
  public var cacheSize: Int?
  /// false: the top layer only (for `vdiskfs info` without `--backing-chain`).
  public var openBacking: Bool = true
  /// Open the top layer for writing (backing layers are always read-only).
  public var writable: Bool = false
  /// Take QEMU's image locks (writer on a writable top, reader elsewhere). false is
  /// `force_share`: no locks, for looking at an image someone else has open (read-only only).
  public var lock: Bool = false

  public init(
    format: ImageFormat? = nil, cacheSize: Int? = nil, openBacking: Bool = true, writable: Bool = false,
    lock: Bool = false
  ) {
    self.format = format
    self.cacheSize = cacheSize
    self.openBacking = openBacking
    self.writable = writable
    self.lock = lock
  }
}

/// Magic numbers of formats we recognize but do not open: refusing them beats showing their
/// metadata as raw guest bytes.
private let knownUnsupportedMagics: [(name: String, magic: [UInt8])] = [
  ("qed", Array("QED\0".utf8)),
  ("qcow version 1", [0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 1]),
  ("cloop", Array("#!/bin/sh\n#V2.0 Format".utf8)),
]

extension ImageOpener {
  /// The format `file`'s magic says, checked in a fixed order; raw only as the last resort, when
  /// no magic matches. A file in a format we know but do not open is refused rather than shown
  /// as raw.
  public static func probe(_ file: ImageFile) throws -> ImageFormat {
    let probe = try ProbeBytes(file)
    for known in knownUnsupportedMagics where probe.head(has: known.magic) {
      throw VDiskError.unsupported(file.path, "\(known.name) images are not supported")
    }
    for format in [ImageFormat.qcow2, .vmdk, .vhdx, .vpc, .vdi] where format.matches(probe) {
      return format
    }
    return .raw
  }
}
