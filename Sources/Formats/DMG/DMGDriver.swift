import VDiskCore

/// How the opener meets DMG (UDIF) images: the "koly" trailer in the last 512 bytes, and a plan
/// for a read-only layer.
public enum DMGDriver: FormatDriver {
  public static let name = "dmg"
  public static let summary =
    "Apple disk image (UDIF, property list or resource fork: zero, raw, ADC, zlib, bzip2 and LZMA (xz) chunks; LZFSE refused; read-only)"

  public static func matches(_ probe: ProbeBytes) -> Bool { KolyTrailer.matches(probe.tail) }

  /// Reads the trailer, the property list (or resource fork) and every partition's chunk table (held in memory, as
  /// QEMU does), checking every chunk against the disk and the file. Writing is refused.
  public static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    let trailer = try KolyTrailer(file: file)
    if context.writable {
      throw VDiskError(.readOnly, path: file.path, "DMG images are read-only")
    }
    let map = try ChunkMap(file: file, trailer: trailer)
    return LayerPlan(file: file, parent: nil, residentBytes: UInt64(map.chunks.count) * 48) { backing, _ in
      DMGLayer(file: file, trailer: trailer, map: map, backing: backing)
    }
  }
}
