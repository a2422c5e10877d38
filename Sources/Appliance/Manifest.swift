import VDiskCore

/// An OVF manifest (`.mf`, DSP0243 10.3): one line per file, `SHA256(name)= hex` or
/// `SHA1(name)= hex`.
public struct Manifest: Sendable {
  public struct Entry: Sendable, Equatable {
    public var algorithm: Digest.Algorithm
    public var name: String
    public var digest: String
  }

  public static let maxBytes = 1 << 20
  public var entries: [Entry]

  public init(parsing bytes: [UInt8], path: String) throws {
    guard bytes.count <= Self.maxBytes else {
      throw VDiskError.corrupt(path, "manifest is larger than 1 MiB")
    }
    entries = []
    for (number, raw) in String(decoding: bytes, as: UTF8.self).split(separator: "\n").enumerated() {
      let line = String(raw).trimmingWhitespace
      if line.isEmpty { continue }
      guard let open = line.firstIndex(of: "("), let close = line.lastIndex(of: ")"), open < close,
        line[line.index(after: close)...].hasPrefix("="),
        let algorithm = Digest.Algorithm(rawValue: line[..<open].uppercased())
      else {
        throw VDiskError.corrupt(
          path, "manifest line \(number + 1) is not \"SHA256(name)= digest\": \(line.prefix(80))")
      }
      let name = String(line[line.index(after: open)..<close])
      let digest = String(line[line.index(close, offsetBy: 2)...]).trimmingWhitespace.lowercased()
      let width = algorithm == .sha1 ? 40 : 64
      guard digest.count == width, digest.allSatisfy({ $0.isHexDigit }) else {
        throw VDiskError.corrupt(
          path, "manifest line \(number + 1) has a malformed \(algorithm.rawValue) digest")
      }
      entries.append(Entry(algorithm: algorithm, name: name, digest: digest))
    }
  }
}

extension Appliance {
  public struct Mismatch: Sendable, Equatable {
    public var name: String
    public var expected: String
    public var actual: String
  }

  /// The manifest, or nil when the appliance has none.
  public func manifest() throws -> Manifest? {
    guard let file = try file(named: manifestName) else { return nil }
    guard file.size <= UInt64(Manifest.maxBytes) else {
      throw VDiskError.corrupt(file.path, "manifest is larger than 1 MiB")
    }
    return Manifest(
      entries: try Manifest(parsing: try file.readBytes(at: 0, count: Int(file.size)), path: file.path)
        .entries)
  }

  /// Checks every file the manifest lists against its digest; `progress(done, total)` after
  /// each chunk. Returns the files that differ; a file listed but absent throws `.notFound`.
  public func verify(
    _ manifest: Manifest, progress: (_ done: UInt64, _ total: UInt64) -> Void = { _, _ in }
  ) throws -> [Mismatch] {
    var files: [(Manifest.Entry, ImageFile)] = []
    for entry in manifest.entries {
      guard let file = try file(named: entry.name) else {
        throw VDiskError(
          .notFound, path: path, "\(entry.name), listed in the manifest, is not in the appliance")
      }
      files.append((entry, file))
    }
    let total = files.reduce(UInt64(0)) { $0 + $1.1.size }
    var done: UInt64 = 0
    var mismatches: [Mismatch] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    for (entry, file) in files {
      var digest = Digest(entry.algorithm)
      var offset: UInt64 = 0
      while offset < file.size {
        let count = try buffer.withUnsafeMutableBytes { b in
          let want = Int(min(UInt64(b.count), file.size - offset))
          return try file.read(into: UnsafeMutableRawBufferPointer(rebasing: b[0..<want]), at: offset)
        }
        guard count > 0 else {
          throw VDiskError(.io, path: file.path, "file ended early at offset \(offset)")
        }
        buffer.withUnsafeBytes { digest.update(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        offset += UInt64(count)
        done += UInt64(count)
        progress(done, total)
      }
      let actual = digest.finish()
      if actual != entry.digest {
        mismatches.append(Mismatch(name: entry.name, expected: entry.digest, actual: actual))
      }
    }
    return mismatches
  }
}

extension Manifest {
  init(entries: [Entry]) { self.entries = entries }
}
