import QCOW2
import VDiskCore

/// The image formats vdiskfs opens.
public enum ImageFormat: String, Sendable, CaseIterable {
  case qcow2
  case raw
}

/// What to open and how (`--format`, `--cache-size`, whether to open backing files).
public struct OpenOptions: Sendable {
  /// `--format`; nil = probe.
  public var format: ImageFormat?
  /// `--cache-size` in bytes; nil = the default (what covers the chain, at most 32 MiB).
  public var cacheSize: Int?
  /// false: the top layer only (for `vdiskfs info` without `--backing-chain`).
  public var openBacking: Bool = true

  public init(format: ImageFormat? = nil, cacheSize: Int? = nil, openBacking: Bool = true) {
    self.format = format
    self.cacheSize = cacheSize
    self.openBacking = openBacking
  }
}

/// Magic numbers of formats we recognize but do not open yet: refusing them beats showing their
/// metadata as raw guest bytes.
private let knownUnsupportedMagics: [(name: String, offset: Int, magic: [UInt8])] = [
  ("vmdk", 0, Array("KDMV".utf8)),
  ("vmdk (descriptor)", 0, Array("# Disk DescriptorFile".utf8)),
  ("vhdx", 0, Array("vhdxfile".utf8)),
  ("vpc", 0, Array("conectix".utf8)),
  ("vdi", 64, [0x7F, 0x10, 0xDA, 0xBE]),
  ("qed", 0, Array("QED\0".utf8)),
]

extension ImageFormat {
  /// Whether the first bytes of a file carry this format's magic (raw has none: always true).
  static func matches(_ format: ImageFormat, _ head: [UInt8]) -> Bool {
    switch format {
    case .qcow2: QCOW2Header.hasMagic(head.prefix(4))
    case .raw: true
    }
  }

  /// The first bytes of `file` (fewer for a tiny file).
  static func head(of file: ImageFile) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 512)
    let n = try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
    return Array(bytes.prefix(n))
  }
}

extension ImageOpener {
  /// The format `file`'s magic says; raw only as the last resort, when no magic matches. A file
  /// in a format we know but cannot open yet is refused rather than shown as raw.
  public static func probe(_ file: ImageFile) throws -> ImageFormat {
    let head = try ImageFormat.head(of: file)
    if QCOW2Header.hasMagic(head.prefix(4)) { return .qcow2 }
    for known in knownUnsupportedMagics {
      let end = known.offset + known.magic.count
      if head.count >= end, Array(head[known.offset..<end]) == known.magic {
        throw VDiskError.unsupported(file.path, "\(known.name) images are not supported yet")
      }
    }
    return .raw
  }
}
