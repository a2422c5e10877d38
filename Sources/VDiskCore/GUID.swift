/// A GUID as VHDX stores it (vhdx-notes, first paragraph): Data1 u32 LE, Data2 u16 LE, Data3 u16
/// LE, then Data4 as 8 raw bytes. `bytes` holds the 16 on-disk bytes.
public struct GUID: Hashable, Sendable, CustomStringConvertible {
  public let bytes: [UInt8]

  public static let zero = GUID(unchecked: [UInt8](repeating: 0, count: 16))

  private init(unchecked bytes: [UInt8]) { self.bytes = bytes }

  /// The GUID stored in `slice` (16 bytes; shorter input is padded with zeros).
  public init(onDisk slice: ArraySlice<UInt8>) {
    var b = Array(slice.prefix(16))
    if b.count < 16 { b += [UInt8](repeating: 0, count: 16 - b.count) }
    bytes = b
  }

  /// Parses `2DC27766-F623-4200-9D64-115E9BFD4A08`, optionally in braces (as parent locators
  /// write `parent_linkage`); nil when malformed.
  public init?(_ text: String) {
    var s = Substring(text)
    if s.hasPrefix("{") && s.hasSuffix("}") && s.count >= 2 { s = s.dropFirst().dropLast() }
    let groups = s.split(separator: "-", omittingEmptySubsequences: false)
    guard groups.map(\.count) == [8, 4, 4, 4, 12] else { return nil }
    var values: [UInt8] = []
    for group in groups {
      let chars = Array(group)
      for i in stride(from: 0, to: chars.count, by: 2) {
        guard let byte = UInt8(String(chars[i...i + 1]), radix: 16) else { return nil }
        values.append(byte)
      }
    }
    // Data1, Data2 and Data3 are little-endian on disk.
    let d1 = values[0..<4].reversed()
    let d2 = values[4..<6].reversed()
    let d3 = values[6..<8].reversed()
    bytes = Array(d1) + Array(d2) + Array(d3) + Array(values[8..<16])
  }

  /// A GUID from its four fields, as the spec writes constants: `GUID(0x2DC2_7766, 0xF623, 0x4200,
  /// [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08])`.
  public init(_ data1: UInt32, _ data2: UInt16, _ data3: UInt16, _ data4: [UInt8]) {
    var b: [UInt8] = []
    for i in 0..<4 { b.append(UInt8(truncatingIfNeeded: data1 >> (8 * UInt32(i)))) }
    for i in 0..<2 { b.append(UInt8(truncatingIfNeeded: data2 >> (8 * UInt16(i)))) }
    for i in 0..<2 { b.append(UInt8(truncatingIfNeeded: data3 >> (8 * UInt16(i)))) }
    self.init(onDisk: (b + data4)[...])
  }

  public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

  /// `2DC27766-F623-4200-9D64-115E9BFD4A08`
  public var description: String {
    func hexes(_ b: some Sequence<UInt8>) -> String {
      b.map { ($0 < 16 ? "0" : "") + String($0, radix: 16, uppercase: true) }.joined()
    }
    return hexes(bytes[0..<4].reversed()) + "-" + hexes(bytes[4..<6].reversed()) + "-"
      + hexes(bytes[6..<8].reversed()) + "-" + hexes(bytes[8..<10]) + "-" + hexes(bytes[10..<16])
  }
}
