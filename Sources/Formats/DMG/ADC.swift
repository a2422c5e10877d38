/// Apple Data Compression (DMG chunk type 0x80000004), an LZ77 variant of three op codes, each
/// led by one byte `b`:
/// - `b & 0x80`: a literal run of `(b & 0x7F) + 1` bytes follows;
/// - `b & 0x40`: a match of `(b & 0x3F) + 4` bytes at distance `(next two bytes, big-endian) + 1`;
/// - otherwise: a match of `((b >> 2) & 0x0F) + 3` bytes at distance `((b & 3) << 8 | next byte) + 1`.
/// A match may overlap its own output (a distance shorter than its length repeats bytes).
enum ADC {
  /// Decodes `input` into `output`; returns the bytes written, or nil when the input is
  /// malformed (truncated op, distance before the start) or would write past `output`'s end.
  static func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int? {
    var i = 0
    var o = 0
    while i < input.count {
      let b = input[i]
      if b & 0x80 != 0 {
        let n = Int(b & 0x7F) + 1
        guard i + 1 + n <= input.count, o + n <= output.count else { return nil }
        for k in 0..<n { output[o + k] = input[i + 1 + k] }
        i += 1 + n
        o += n
        continue
      }
      let length: Int
      let distance: Int
      if b & 0x40 != 0 {
        guard i + 3 <= input.count else { return nil }
        length = Int(b & 0x3F) + 4
        distance = (Int(input[i + 1]) << 8 | Int(input[i + 2])) + 1
        i += 3
      } else {
        guard i + 2 <= input.count else { return nil }
        length = Int((b >> 2) & 0x0F) + 3
        distance = (Int(b & 0x03) << 8 | Int(input[i + 1])) + 1
        i += 2
      }
      guard distance <= o, o + length <= output.count else { return nil }
      for k in 0..<length { output[o + k] = output[o + k - distance] }
      o += length
    }
    return o
  }
}
