import Foundation
import ImageFormats
import Testing
import VDiskCore

/// Random damage to an image's metadata, `rounds` times from `original`: each round changes one
/// to three bytes at offsets `pick` chooses (given the round and the generator), writes the
/// result to `image`, and opens and reads it whole with `format`. Every round must either read
/// or be refused with a `VDiskError` naming a file under `folder`; a crash fails the whole run.
/// Returns how many rounds were refused (a run that refused none damaged nothing that matters).
public func openDamagedCopies(
  of original: [UInt8], at image: String, format: any FormatDriver.Type, folder: String, rounds: Int = 300,
  seed: UInt64, pick: (_ round: Int, _ rng: inout SplitMix64) -> Int,
  sourceLocation: SourceLocation = #_sourceLocation
) throws -> Int {
  var rng = SplitMix64(seed: seed)
  var refused = 0
  for round in 0..<rounds {
    var bytes = original
    for _ in 0..<(1 + rng.next() % 3) {
      let at = pick(round, &rng)
      guard at >= 0, at < bytes.count else { continue }
      bytes[at] = UInt8(truncatingIfNeeded: rng.next())
    }
    try Data(bytes).write(to: URL(fileURLWithPath: image))
    do {
      let chain = try openChain(image, .init(format: format))
      _ = try chain.seekData(from: 0)
      if chain.virtualSize <= 64 << 20 { _ = try readAll(chain) }
    } catch let error as VDiskError {
      #expect(error.path.hasPrefix(folder), "\(error)", sourceLocation: sourceLocation)
      refused += 1
    }
  }
  return refused
}
