import Testing
import VDiskCore

/// Random writes (1 byte up to `maxWrite`, aligned and not), reads, discards of both kinds and
/// flushes on a `MirroredDisk`, the chain compared with the mirror as they go. Each format's
/// differential test makes the image, runs this, then has qemu judge the image against the
/// saved mirror; the parameters keep each format's mix of sizes, alignments and operations.
public struct DifferentialRun {
  /// Percent cut-offs of one operation draw (0..<100): below `verify` a write, then a read
  /// compared with the mirror, a punched hole, a zeroed range, a flush, and above `flush` (on
  /// every fourth step) a comparison of the whole disk.
  public struct Mix: Sendable {
    public var verify: UInt64
    public var punchHole: UInt64
    public var zeroRange: UInt64
    public var flush: UInt64

    public init(verify: UInt64, punchHole: UInt64, zeroRange: UInt64, flush: UInt64) {
      self.verify = verify
      self.punchHole = punchHole
      self.zeroRange = zeroRange
      self.flush = flush
    }

    /// Writes 50%, reads 22%, holes 10%, zero ranges 7%, flushes 6%, whole-disk checks 5%.
    public static let standard = Mix(verify: 72, punchHole: 82, zeroRange: 89, flush: 95)
    /// Writes 50%, reads 22%, holes 8%, zero ranges 8%, flushes 7%, whole-disk checks 5%.
    public static let evenDiscards = Mix(verify: 72, punchHole: 80, zeroRange: 88, flush: 95)
  }

  /// How a range is aligned: one draw in three aligned to whole units, or (`unitOrSector`) one
  /// in four to whole units and one in four to 512-byte sectors.
  public enum Alignment: Sendable { case unit, unitOrSector }

  /// Names the run in failures: "NAME seed SEED step N: …".
  public var name: String
  public var seed: UInt64
  public var ops: Int
  /// The format's allocation unit (cluster, grain, block), a power of two.
  public var unit: UInt64
  public var alignment: Alignment = .unit
  /// Percent cut-offs of the length draw: below the first up to 8 KiB, then up to 256 KiB, then
  /// up to 1 MiB, else up to `maxWrite`.
  public var lengthCutoffs: (UInt64, UInt64, UInt64) = (55, 88, 97)
  public var maxWrite: UInt64 = 4 << 20
  public var mix: Mix = .standard

  public init(name: String, seed: UInt64, ops: Int, unit: UInt64) {
    self.name = name
    self.seed = seed
    self.ops = ops
    self.unit = unit
  }

  /// Runs the operations on `disk` (the generator seeded from `seed` and the disk size); at the
  /// end flushes, compares the whole disk and saves the mirror to `mirrorPath`. A difference is
  /// recorded as an issue and ends the run early (the mirror then is not saved).
  public func exercise(
    _ disk: MirroredDisk, mirrorPath: String, sourceLocation: SourceLocation = #_sourceLocation
  )
    throws
  {
    var rng = SplitMix64(seed: seed &* 7919 &+ disk.size)
    let size = disk.size
    let label = "\(name) seed \(seed)"
    func randomRange() -> (UInt64, Int) {
      let kind = rng.next() % 100
      let limit: UInt64 =
        kind < lengthCutoffs.0
        ? 8192 : kind < lengthCutoffs.1 ? 256 << 10 : kind < lengthCutoffs.2 ? 1 << 20 : maxWrite
      var length = 1 + rng.next() % min(limit, size)
      var offset = rng.next() % (size - length + 1)
      switch alignment {
      case .unit:
        if rng.next() % 3 == 0 {
          // Unit-aligned ranges exercise whole-unit paths (new units, in place, discard to zero).
          offset &= ~(unit - 1)
          length = max(unit, length & ~(unit - 1))
          if offset + length > size { length = size - offset }
        }
      case .unitOrSector:
        switch rng.next() % 4 {
        case 0:
          offset &= ~(unit - 1)
          length = max(unit, length & ~(unit - 1))
        case 1:
          offset &= ~511
          length = max(512, length & ~511)
        default:
          break
        }
        if offset + length > size { length = size - offset }
      }
      return (offset, Int(length))
    }
    for step in 0..<ops {
      let op = rng.next() % 100
      let (offset, length) = randomRange()
      switch op {
      case 0..<50:
        try disk.write(at: offset, count: length, sourceLocation: sourceLocation)
      case 50..<mix.verify:
        if let d = try disk.verify(at: offset, count: length) {
          Issue.record("\(label) step \(step): \(d)", sourceLocation: sourceLocation)
          return
        }
      case mix.verify..<mix.punchHole:
        try disk.discard(at: offset, count: length, mode: .punchHole)
      case mix.punchHole..<mix.zeroRange:
        try disk.discard(at: offset, count: length, mode: .zeroRange)
      case mix.zeroRange..<mix.flush:
        try disk.chain.flush()
      default:
        if step % 4 == 0, let d = try disk.verifyAll() {
          Issue.record("\(label) step \(step) (full check): \(d)", sourceLocation: sourceLocation)
          return
        }
      }
    }
    try disk.chain.flush()
    if let d = try disk.verifyAll() {
      Issue.record("\(label) at the end: \(d)", sourceLocation: sourceLocation)
    }
    try disk.saveMirror(mirrorPath)
  }
}
