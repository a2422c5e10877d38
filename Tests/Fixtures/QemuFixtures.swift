import Foundation

/// Images made at test time by QEMU's own tools: QEMU is the oracle.
public enum Qemu {
  /// `qemu-img ARGS…`, returning standard output.
  @discardableResult
  public static func img(_ arguments: String...) throws -> String {
    try run("qemu-img", arguments).stdout
  }

  @discardableResult
  public static func img(_ arguments: [String]) throws -> String {
    try run("qemu-img", arguments).stdout
  }

  /// `qemu-io -f FORMAT -c CMD … IMAGE`. Commands are qemu-io commands such as
  /// `write -P 0x5a 0 64k` or `write -z 1M 64k`.
  public static func io(_ image: String, format: String = "qcow2", _ commands: [String]) throws {
    var arguments = ["-f", format]
    for c in commands { arguments += ["-c", c] }
    arguments.append(image)
    let r = try run("qemu-io", arguments)
    // qemu-io reports command failures on stdout/stderr but may still exit 0.
    let text = r.stdout + r.stderr
    if text.contains("failed") || text.contains("error") {
      throw CommandFailed(command: ["qemu-io"] + arguments, result: r)
    }
  }

  /// `qemu-img create -f FORMAT [-o OPTIONS] [-b BACKING -F BFMT] IMAGE SIZE`.
  public static func create(
    _ image: String, format: String = "qcow2", size: String, options: [String] = [], backing: String? = nil,
    backingFormat: String? = nil
  ) throws {
    var arguments = ["create", "-q", "-f", format]
    if !options.isEmpty { arguments += ["-o", options.joined(separator: ",")] }
    if let backing { arguments += ["-b", backing] }
    if let backingFormat { arguments += ["-F", backingFormat] }
    arguments += [image]
    arguments.append(size)
    try img(arguments)
  }

  /// The guest-visible bytes of `image` as `qemu-img convert -O raw` produces them.
  public static func rawContent(of image: String, format: String? = nil, scratch: Scratch) throws -> [UInt8] {
    let out = scratch.file("oracle-\(UUID().uuidString).raw")
    defer { try? FileManager.default.removeItem(atPath: out) }
    var arguments = ["convert"]
    if let format { arguments += ["-f", format] }
    arguments += ["-O", "raw", image, out]
    try img(arguments)
    return try [UInt8](Data(contentsOf: URL(fileURLWithPath: out)))
  }

  /// Path of a raw conversion of `image` (for `cmp` against a mounted disk.raw).
  public static func rawFile(of image: String, format: String? = nil, scratch: Scratch) throws -> String {
    let out = scratch.file("oracle-\(UUID().uuidString).raw")
    var arguments = ["convert"]
    if let format { arguments += ["-f", format] }
    arguments += ["-O", "raw", image, out]
    try img(arguments)
    return out
  }

  /// `qemu-img map --output=json` parsed into entries.
  public static func map(_ image: String, format: String? = nil) throws -> [MapEntry] {
    var arguments = ["map", "--output=json"]
    if let format { arguments += ["-f", format] }
    arguments.append(image)
    let json = try run("qemu-img", arguments).stdout
    return try JSONDecoder().decode([MapEntry].self, from: Data(json.utf8))
  }

  public struct MapEntry: Decodable, Sendable, Equatable {
    public var start: UInt64
    public var length: UInt64
    public var depth: Int
    public var present: Bool?
    public var zero: Bool
    public var data: Bool
    public var offset: UInt64?
  }

  /// Writes `count` distinct, non-zero patterns of assorted lengths at deterministic pseudo-random
  /// places within `[0, size)`, through qemu-io, in one qemu-io run. Returns the commands used.
  @discardableResult
  public static func scatterPatterns(
    _ image: String, format: String = "qcow2", size: UInt64, count: Int, seed: UInt64,
    unit: UInt64 = 512, maxUnits: UInt64 = 256
  ) throws -> [String] {
    var rng = SplitMix64(seed: seed)
    var commands: [String] = []
    for i in 0..<count {
      let units = 1 + rng.next() % maxUnits
      let length = min(units * unit, size)
      let offset = (rng.next() % max(1, (size - length) / unit + 1)) * unit
      let pattern = 1 + (UInt64(i) &* 37 &+ seed) % 255
      commands.append("write -P \(pattern) \(offset) \(length)")
    }
    try io(image, format: format, commands)
    return commands
  }
}

/// A small deterministic generator for test offsets (SplitMix64).
public struct SplitMix64: RandomNumberGenerator, Sendable {
  private var state: UInt64
  public init(seed: UInt64) { state = seed }
  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

/// The index of the first byte where `a` and `b` differ (or where one ends), nil when equal.
public func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
  // memcmp first (`same`): the byte loop alone costs seconds per big differential in a debug build.
  if a.count == b.count && same(a, 0, b) { return nil }
  let n = min(a.count, b.count)
  for i in 0..<n where a[i] != b[i] { return i }
  return a.count == b.count ? nil : n
}
