import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// Turns `ImageInfo` into qemu-img-info-shaped JSON or human text.
enum InfoRendering {
  static func jsonObject(_ info: ImageInfo, actualSize: UInt64) -> InfoValue {
    var fields: [InfoField] = [
      InfoField("virtual-size", .integer(Int64(clamping: info.virtualSize))),
      InfoField("filename", .string(info.filename)),
    ]
    if let c = info.clusterSize { fields.append(InfoField("cluster-size", .integer(Int64(clamping: c)))) }
    fields.append(InfoField("format", .string(info.format)))
    fields.append(InfoField("actual-size", .integer(Int64(clamping: actualSize))))
    if !info.formatSpecific.isEmpty {
      fields.append(
        InfoField(
          "format-specific",
          .object([InfoField("type", .string(info.format)), InfoField("data", .object(info.formatSpecific))]))
      )
    }
    if let b = info.backingFilename {
      fields.append(InfoField("backing-filename", .string(b)))
      if let full = info.fullBackingFilename {
        fields.append(InfoField("full-backing-filename", .string(full)))
      }
      if let f = info.backingFormat { fields.append(InfoField("backing-filename-format", .string(f))) }
    }
    if let dirty = info.dirtyFlag { fields.append(InfoField("dirty-flag", .bool(dirty))) }
    return .object(fields)
  }

  static func json(_ value: InfoValue, indent: String = "") -> String {
    let inner = indent + "    "
    switch value {
    case .string(let s): return quote(s)
    case .integer(let n): return String(n)
    case .bool(let b): return b ? "true" : "false"
    case .array(let items):
      if items.isEmpty { return "[]" }
      return "[\n" + items.map { inner + json($0, indent: inner) }.joined(separator: ",\n") + "\n\(indent)]"
    case .object(let fields):
      if fields.isEmpty { return "{}" }
      return "{\n"
        + fields.map { inner + quote($0.key) + ": " + json($0.value, indent: inner) }.joined(separator: ",\n")
        + "\n\(indent)}"
    }
  }

  static func quote(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case _ where scalar.value < 0x20:
        out +=
          "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count)
          + String(scalar.value, radix: 16)
      default: out.unicodeScalars.append(scalar)
      }
    }
    return out + "\""
  }

  static func human(_ info: ImageInfo, actualSize: UInt64) -> String {
    var lines = [
      "image: \(info.filename)",
      "file format: \(info.format)",
      "virtual size: \(humanSize(info.virtualSize)) (\(info.virtualSize) bytes)",
      "disk size: \(humanSize(actualSize))",
    ]
    if let c = info.clusterSize { lines.append("cluster_size: \(c)") }
    if let b = info.backingFilename {
      let full = info.fullBackingFilename.map { $0 == b ? "" : " (actual path: \($0))" } ?? ""
      lines.append("backing file: \(b)\(full)")
      if let f = info.backingFormat { lines.append("backing file format: \(f)") }
    }
    if let dirty = info.dirtyFlag, dirty { lines.append("dirty flag: yes") }
    if !info.formatSpecific.isEmpty {
      lines.append("Format specific information:")
      for field in info.formatSpecific { lines.append("    \(field.key): \(plain(field.value))") }
    }
    return lines.joined(separator: "\n") + "\n"
  }

  static func plain(_ value: InfoValue) -> String {
    switch value {
    case .string(let s): s
    case .integer(let n): String(n)
    case .bool(let b): b ? "true" : "false"
    case .array(let items): "[" + items.map(plain).joined(separator: ", ") + "]"
    case .object(let fields): fields.map { "\($0.key)=\(plain($0.value))" }.joined(separator: ", ")
    }
  }

  /// `1 GiB`, `196 KiB`, `512 B`, like qemu-img.
  static func humanSize(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 {
      value /= 1024
      unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    let rounded = (value * 100).rounded() / 100
    let text = rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
    return "\(text) \(units[unit])"
  }
}

/// Bytes the file occupies on disk (`st_blocks * 512`), what qemu-img calls disk size.
func diskUsage(of file: ImageFile) -> UInt64 {
  var st = stat()
  guard fstat(file.descriptor.rawValue, &st) == 0 else { return 0 }
  return UInt64(max(0, st.st_blocks)) * 512
}
