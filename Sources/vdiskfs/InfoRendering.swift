import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// One internal snapshot as `qemu-img snapshot -l` / `qemu-img info` list it.
struct SnapshotRow: Equatable {
  var id: String
  var name: String
  var vmStateSize: UInt64
  var dateSeconds: UInt32
  var dateNanoseconds: UInt32
  var vmClockNanoseconds: UInt64
  /// nil when the image records none (qemu-img then prints none).
  var icount: UInt64?
}

/// Turns `ImageInfo` into qemu-img-info-shaped JSON or human text.
enum InfoRendering {
  static func jsonObject(_ info: ImageInfo, actualSize: UInt64, snapshots: [SnapshotRow] = []) -> InfoValue {
    var fields: [InfoField] = []
    if !snapshots.isEmpty { fields.append(InfoField("snapshots", .array(snapshots.map(snapshotObject)))) }
    fields += [
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

  /// A `snapshots` element with qemu-img info's field names, in its order. QEMU's fields are
  /// signed 64-bit integers.
  static func snapshotObject(_ s: SnapshotRow) -> InfoValue {
    var fields: [InfoField] = []
    if let icount = s.icount { fields.append(InfoField("icount", .integer(Int64(bitPattern: icount)))) }
    fields += [
      InfoField("vm-clock-nsec", .integer(Int64(s.vmClockNanoseconds % 1_000_000_000))),
      InfoField("name", .string(s.name)),
      InfoField("date-sec", .integer(Int64(s.dateSeconds))),
      InfoField("date-nsec", .integer(Int64(s.dateNanoseconds))),
      InfoField("vm-clock-sec", .integer(Int64(s.vmClockNanoseconds / 1_000_000_000))),
      InfoField("id", .string(s.id)),
      InfoField("vm-state-size", .integer(Int64(bitPattern: s.vmStateSize))),
    ]
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

  static func human(_ info: ImageInfo, actualSize: UInt64, snapshots: [SnapshotRow] = []) -> String {
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
    if !snapshots.isEmpty {
      lines.append("Snapshot list:")
      lines += snapshotTable(snapshots)
      lines.append("Snapshot directories (when mounted):")
      lines += snapshotDirectories(snapshots)
    }
    if !info.formatSpecific.isEmpty {
      lines.append("Format specific information:")
      for field in info.formatSpecific { lines += nested(field.key, field.value, indent: "    ") }
    }
    return lines.joined(separator: "\n") + "\n"
  }

  /// A format-specific field as qemu-img prints it: `key: value`, or for an object or a list
  /// of objects `key:` and then the members (`[0]:` for each list item), four spaces deeper.
  static func nested(_ key: String, _ value: InfoValue, indent: String) -> [String] {
    let deeper = indent + "    "
    switch value {
    case .object(let fields):
      return ["\(indent)\(key):"] + fields.flatMap { nested($0.key, $0.value, indent: deeper) }
    case .array(let items) where items.contains(where: { if case .object = $0 { true } else { false } }):
      return ["\(indent)\(key):"]
        + items.enumerated().flatMap { nested("[\($0.offset)]", $0.element, indent: deeper) }
    default:
      return ["\(indent)\(key): \(plain(value))"]
    }
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

  /// The lines of `qemu-img snapshot -l` after "Snapshot list:" (QEMU's `bdrv_snapshot_dump`:
  /// header `%-10s%-17s%8s%20s%13s%11s`, rows `%-9s %-16s %8s%20s%13s%11s`, local time).
  static func snapshotTable(_ snapshots: [SnapshotRow]) -> [String] {
    func left(_ s: String, _ width: Int) -> String {
      s + String(repeating: " ", count: max(0, width - s.utf8.count))
    }
    func right(_ s: String, _ width: Int) -> String {
      String(repeating: " ", count: max(0, width - s.utf8.count)) + s
    }
    var lines = [
      left("ID", 10) + left("TAG", 17) + right("VM SIZE", 8) + right("DATE", 20) + right("VM CLOCK", 13)
        + right("ICOUNT", 11)
    ]
    for s in snapshots {
      let seconds = s.vmClockNanoseconds / 1_000_000_000
      let clock =
        digits(seconds / 3600, 2) + ":" + digits((seconds / 60) % 60, 2) + ":" + digits(seconds % 60, 2) + "."
        + digits((s.vmClockNanoseconds / 1_000_000) % 1000, 3)
      let icount = s.icount.map { String(Int64(bitPattern: $0)) } ?? ""
      lines.append(
        left(s.id, 9) + " " + left(s.name, 16) + " " + right(qemuSize(s.vmStateSize), 8)
          + right(localDate(s.dateSeconds), 20) + right(clock, 13) + right(icount, 11))
    }
    return lines
  }

  /// `    snapshots/<dir>/    ID <id>` for each snapshot, with the names the mount gives them.
  static func snapshotDirectories(_ snapshots: [SnapshotRow]) -> [String] {
    let infos = snapshots.map {
      SnapshotInfo(
        id: $0.id, name: $0.name, virtualSize: 0, vmStateSize: $0.vmStateSize, dateSeconds: $0.dateSeconds,
        dateNanoseconds: $0.dateNanoseconds, vmClockNanoseconds: $0.vmClockNanoseconds)
    }
    return zip(snapshots, SnapshotInfo.directoryNames(infos)).map { row, directory in
      "    snapshots/\(directory)/    ID \(row.id)"
    }
  }

  /// `value` in decimal, zero-padded to `width` digits (printf `%0Nd`).
  static func digits(_ value: UInt64, _ width: Int) -> String {
    let text = String(value)
    return String(repeating: "0", count: max(0, width - text.count)) + text
  }

  /// `2024-05-01 12:00:00` in local time (strftime `%Y-%m-%d %H:%M:%S`).
  static func localDate(_ seconds: UInt32) -> String {
    var time = time_t(seconds)
    var parts = tm()
    guard localtime_r(&time, &parts) != nil else { return "" }
    var buffer = [CChar](repeating: 0, count: 64)
    let n = strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M:%S", &parts)
    return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// QEMU's `size_to_str`: three significant digits and a binary unit (`0 B`, `1.5 MiB`).
  static func qemuSize(_ bytes: UInt64) -> String {
    let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
    var exponent: Int32 = 0
    _ = frexp(Double(bytes) / (1000.0 / 1024.0), &exponent)
    let i = min(max(Int((exponent - 1) / 10), 0), suffixes.count - 1)
    let value = Double(bytes) / Double(UInt64(1) << UInt64(i * 10))
    var buffer = [CChar](repeating: 0, count: 32)
    let n = withVaList([value]) { vsnprintf(&buffer, buffer.count, "%0.3g", $0) }
    let number = String(
      decoding: buffer[0..<Int(max(0, min(n, 31)))].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return number + " " + suffixes[i] + "B"
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
  file.status()?.allocatedBytes ?? 0
}

/// The host bytes of every file `layer` reads (a Parallels bundle's images too).
func diskUsage(of layer: any ImageLayer) -> UInt64 {
  ((layer as? any FileSetLayer)?.files ?? [layer.file]).reduce(0) { $0 &+ diskUsage(of: $1) }
}
