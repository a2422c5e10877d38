/// The feature name table header extension (0x6803f857; qcow2 spec, "Feature name table"):
/// names for feature bits, so an error about a bit we do not know can say what it is.
public struct QCOW2FeatureNames: Sendable, Equatable {
  public enum FeatureType: UInt8, Sendable {
    case incompatible = 0
    case compatible = 1
    case autoclear = 2
  }

  private struct Key: Hashable, Sendable {
    var type: UInt8
    var bit: Int
  }

  private var names: [Key: String] = [:]

  public init() {}

  /// Decodes entries of 48 bytes: type, bit number, 46 bytes of zero-padded name. A trailing
  /// partial entry is ignored (as QEMU does); entries with a bit number above 63 are skipped.
  init(_ data: ArraySlice<UInt8>) {
    let bytes = Array(data)
    var i = 0
    while i + 48 <= bytes.count {
      let type = bytes[i]
      let bit = Int(bytes[i + 1])
      let raw = bytes[(i + 2)..<(i + 48)]
      let nameBytes = raw.prefix { $0 != 0 }
      if bit < 64 {
        names[Key(type: type, bit: bit)] = String(decoding: nameBytes, as: UTF8.self)
      }
      i += 48
    }
  }

  public var isEmpty: Bool { names.isEmpty }

  /// The recorded name of feature `bit` of `type`, if the table has one.
  public func name(type: FeatureType, bit: Int) -> String? {
    names[Key(type: type.rawValue, bit: bit)]
  }
}
