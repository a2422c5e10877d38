import Foundation
import ImageFormats
import Logging
import Testing
import VDiskCore

/// The logger tests open images with.
public let logger = Logger(label: "vdiskfs-tests")

/// Opens `path` and its backing chain with the project's opener.
public func openChain(_ path: String, _ options: OpenOptions = OpenOptions()) throws -> LayerChain {
  try ImageOpener.open(path, options: options, logger: logger)
}

/// The whole guest disk read through the chain in chunks of assorted sizes (so reads start and
/// end at odd places inside clusters).
public func readAll(_ chain: LayerChain, seed: UInt64 = 1) throws -> [UInt8] {
  var rng = SplitMix64(seed: seed)
  var out: [UInt8] = []
  out.reserveCapacity(Int(chain.virtualSize))
  var position: UInt64 = 0
  while position < chain.virtualSize {
    let chunk = Int(1 + rng.next() % (3 << 19))
    let bytes = try chain.read(at: position, count: chunk)
    if bytes.isEmpty { break }
    out += bytes
    position += UInt64(bytes.count)
  }
  return out
}

/// Requires that reading `image` through vdiskfs gives exactly what `qemu-img convert` gives.
public func expectMatchesQemu(
  _ image: String, scratch: Scratch, sourceLocation: SourceLocation = #_sourceLocation
)
  throws
{
  let expected = try Qemu.rawContent(of: image, scratch: scratch)
  let chain = try openChain(image)
  #expect(chain.virtualSize == UInt64(expected.count), sourceLocation: sourceLocation)
  let actual = try readAll(chain)
  let difference = firstDifference(actual, expected)
  #expect(
    difference == nil, "first difference at \(difference.map { hex($0) } ?? "")",
    sourceLocation: sourceLocation)
}

/// Overwrites `width` bytes at `offset` of `path` with `value` in big-endian order.
public func patch(_ path: String, at offset: UInt64, _ value: UInt64, width: Int) throws {
  var bytes = [UInt8](repeating: 0, count: width)
  for i in 0..<width { bytes[i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * (width - 1 - i))) }
  try patch(path, at: offset, bytes: bytes)
}

public func patch(_ path: String, at offset: UInt64, bytes: [UInt8]) throws {
  let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
  defer { try? handle.close() }
  try handle.seek(toOffset: offset)
  try handle.write(contentsOf: Data(bytes))
}

/// A big-endian field of `path`.
public func field(_ path: String, at offset: UInt64, width: Int) throws -> UInt64 {
  let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
  defer { try? handle.close() }
  try handle.seek(toOffset: offset)
  let data = try handle.read(upToCount: width) ?? Data()
  return data.reduce(0) { $0 << 8 | UInt64($1) }
}

/// Runs `body` and requires a `VDiskError` of `kind` whose description contains every string.
public func expectVDiskError(
  _ kind: VDiskError.Kind, _ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation,
  _ body: () throws -> Void
) {
  do {
    try body()
    Issue.record("expected a \(kind) error containing \(fragments)", sourceLocation: sourceLocation)
  } catch let error as VDiskError {
    #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
    for fragment in fragments {
      #expect(error.description.contains(fragment), "\(error)", sourceLocation: sourceLocation)
    }
  } catch {
    Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
  }
}

/// The host offset of the L2 table covering guest cluster 0 and the L1 table offset.
public func firstL2Table(_ image: String) throws -> (l1: UInt64, l2: UInt64) {
  let l1 = try field(image, at: 40, width: 8)
  let l2 = try field(image, at: l1, width: 8) & 0x00FF_FFFF_FFFF_FE00
  return (l1, l2)
}

extension Scratch {
  /// A fresh scratch directory; callers `defer { scratch.remove() }`.
  public static func make(_ label: String) throws -> Scratch { try Scratch(label) }
}

/// One maximal run of a single layer's map: what `qemu-img map --output=json` prints for it.
public struct MapRun: Equatable, CustomStringConvertible {
  public enum Kind: Equatable, Sendable { case data, zero, unallocated }
  public var start: UInt64
  public var length: UInt64
  public var kind: Kind
  public var offset: UInt64?
  public init(start: UInt64, length: UInt64, kind: Kind, offset: UInt64? = nil) {
    self.start = start
    self.length = length
    self.kind = kind
    self.offset = offset
  }
  public var description: String {
    "\(kind) \(hex(start))+\(hex(length))" + (offset.map { " @\(hex($0))" } ?? "")
  }
}

/// The map of one layer from `extent(at:maxLength:)` answers, each asked for the rest of the disk
/// (compressed runs count as data without an offset).
public func layerMap(_ layer: any ImageLayer) throws -> [MapRun] {
  var runs: [MapRun] = []
  var position: UInt64 = 0
  while position < layer.virtualSize {
    let e = try layer.extent(at: position, maxLength: layer.virtualSize - position)
    let run: MapRun
    switch e.mapping {
    case .data(let host): run = MapRun(start: position, length: e.length, kind: .data, offset: host)
    case .compressed: run = MapRun(start: position, length: e.length, kind: .data, offset: nil)
    case .zero: run = MapRun(start: position, length: e.length, kind: .zero)
    case .unallocated: run = MapRun(start: position, length: e.length, kind: .unallocated)
    }
    runs.appendMerging(run)
    position += e.length
  }
  return runs
}

extension [MapRun] {
  /// Appends `run`, merging it into the last one when both are the same non-data kind (or data
  /// without offsets): what differs then is only where a driver or qemu chose to split.
  public mutating func appendMerging(_ run: MapRun) {
    if var last = self.last, last.kind == run.kind,
      last.kind != .data || last.offset == nil && run.offset == nil
    {
      last.length += run.length
      self[count - 1] = last
    } else {
      append(run)
    }
  }
}

/// `qemu-img map` of a single image as `MapRun`s.
public func qemuMap(_ image: String) throws -> [MapRun] {
  var runs: [MapRun] = []
  for e in try Qemu.map(image) {
    let kind: MapRun.Kind = e.data ? .data : (e.present == false ? .unallocated : .zero)
    runs.appendMerging(MapRun(start: e.start, length: e.length, kind: kind, offset: e.data ? e.offset : nil))
  }
  return runs
}
