/// A 16-byte GUID/UUID as an image stores it, and its 8-4-4-4-12 text.
///
/// Two layouts exist on disk. Microsoft's and EFI's (VHDX, GPT, VDI): Data1 u32, Data2 u16 and
/// Data3 u16 little-endian, then Data4 as 8 bytes in order (vhdx-notes, first paragraph; UEFI
/// spec, "EFI GUID Format"). RFC 4122's (VHD): all 16 bytes in text order.
public struct GUID: Hashable, Sendable, CustomStringConvertible {
  /// How the on-disk bytes map to the text.
  public enum Layout: Sendable {
    /// Data1–Data3 little-endian (VHDX, GPT, VDI).
    case mixedEndian
    /// Bytes in text order (RFC 4122; VHD).
    case bigEndian
  }

  /// The 16 bytes as stored on disk.
  public let bytes: [UInt8]
  public let layout: Layout

  public static let zero = GUID(onDisk: [UInt8](repeating: 0, count: 16)[...])

  /// The GUID stored in `slice` (16 bytes; shorter input is padded with zeros).
  public init(onDisk slice: ArraySlice<UInt8>, layout: Layout = .mixedEndian) {
    var b = Array(slice.prefix(16))
    if b.count < 16 { b += [UInt8](repeating: 0, count: 16 - b.count) }
    bytes = b
    self.layout = layout
  }

  /// Parses `2DC27766-F623-4200-9D64-115E9BFD4A08`, optionally in braces (as VHDX parent
  /// locators write `parent_linkage`), into the mixed-endian layout; nil when malformed.
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
    self.init(onDisk: Self.reorder(values)[...])
  }

  /// A mixed-endian GUID from its four fields, as specs write constants: `GUID(0x2DC2_7766,
  /// 0xF623, 0x4200, [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08])`.
  public init(_ data1: UInt32, _ data2: UInt16, _ data3: UInt16, _ data4: [UInt8]) {
    var b: [UInt8] = []
    for i in 0..<4 { b.append(UInt8(truncatingIfNeeded: data1 >> (8 * UInt32(i)))) }
    for i in 0..<2 { b.append(UInt8(truncatingIfNeeded: data2 >> (8 * UInt16(i)))) }
    for i in 0..<2 { b.append(UInt8(truncatingIfNeeded: data3 >> (8 * UInt16(i)))) }
    self.init(onDisk: (b + data4)[...])
  }

  public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

  /// The 16 bytes in text order.
  public var textOrder: [UInt8] { layout == .bigEndian ? bytes : Self.reorder(bytes) }

  /// `2DC27766-F623-4200-9D64-115E9BFD4A08`
  public var description: String { text(uppercase: true) }

  /// The 8-4-4-4-12 text in upper or lower case hex digits.
  public func text(uppercase: Bool) -> String {
    let digits = Array(uppercase ? "0123456789ABCDEF" : "0123456789abcdef")
    var text = ""
    for (i, byte) in textOrder.enumerated() {
      if i == 4 || i == 6 || i == 8 || i == 10 { text.append("-") }
      text.append(digits[Int(byte >> 4)])
      text.append(digits[Int(byte & 0xF)])
    }
    return text
  }

  /// Swaps Data1–Data3 between text order and the mixed-endian layout (its own inverse).
  private static func reorder(_ b: [UInt8]) -> [UInt8] {
    guard b.count == 16 else { return b }
    return [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]] + b[8..<16]
  }
}
