import Bochs
import Cloop
import DMG
import Parallels
import QCOW1
import QCOW2
import QED
import VDI
import VDiskCore
import VHD
import VHDX
import VMDK

/// The image formats vdiskfs opens, in probe order: the one list that probing, `--format`,
/// backing-format names, opening and the CLI's help read. Adding a format is a target with a
/// `FormatDriver` and one line in `standard`.
public struct FormatRegistry: Sendable {
  /// A format we recognize by its magic but do not open.
  public struct Unsupported: Sendable {
    public var name: String
    public var magic: [UInt8]

    public init(name: String, magic: [UInt8]) {
      self.name = name
      self.magic = magic
    }
  }

  /// The drivers in probe order. A driver whose `matches` is always true (raw) is last.
  public let drivers: [any FormatDriver.Type]
  /// Magic numbers of formats we know but do not open: refusing them beats showing their
  /// metadata as raw guest bytes.
  public let unsupported: [Unsupported]

  public init(drivers: [any FormatDriver.Type], unsupported: [Unsupported] = []) {
    self.drivers = drivers
    self.unsupported = unsupported
  }

  /// What vdiskfs opens. Raw has no magic, so it comes last: chosen only when nothing else
  /// matches.
  public static let standard = FormatRegistry(
    drivers: [
      QCOW2Driver.self,
      VMDKDriver.self,
      VHDXDriver.self,
      VHDDriver.self,
      VDIDriver.self,
      QEDDriver.self,
      QCOW1Driver.self,
      ParallelsDriver.self,
      CloopDriver.self,
      BochsDriver.self,
      DMGDriver.self,
      RawDriver.self,
    ],
    unsupported: [])

  /// The formats' names, in probe order.
  public var names: [String] { drivers.map { $0.name } }

  /// The driver called `name` (case-insensitive), nil if none is.
  public func driver(named name: String) -> (any FormatDriver.Type)? {
    let lowered = name.lowercased()
    return drivers.first { $0.name == lowered }
  }

  /// The format `file`'s magic says, checked in probe order; the first match wins, so a format
  /// without magic (raw) is only the last resort. A file in a format we know but do not open is
  /// refused rather than shown as raw.
  public func probe(_ file: ImageFile) throws -> any FormatDriver.Type {
    switch recognize(try ProbeBytes(file)) {
    case .driver(let driver):
      return driver
    case .unsupported(let known):
      throw VDiskError.unsupported(file.path, "\(known.name) images are not supported")
    case nil:
      throw VDiskError.unsupported(
        file.path, "no format matches (known: \(names.joined(separator: ", ")))")
    }
  }

  /// What probing finds in `probe`.
  public enum Recognized {
    case driver(any FormatDriver.Type)
    case unsupported(Unsupported)

    /// The format's name (`qcow2`, `qed`, …).
    public var name: String {
      switch self {
      case .driver(let driver): driver.name
      case .unsupported(let known): known.name
      }
    }
  }

  /// The format the bytes of `probe` say, by the rules of `probe(_:)`; nil when none matches.
  public func recognize(_ probe: ProbeBytes) -> Recognized? {
    if let known = unsupported.first(where: { probe.head(has: $0.magic) }) { return .unsupported(known) }
    return drivers.first { $0.matches(probe) }.map { .driver($0) }
  }

  /// The names as a sentence: "qcow2, vmdk, vhdx, vpc, vdi or raw".
  public var namesText: String {
    guard let last = names.last else { return "" }
    let rest = names.dropLast()
    return rest.isEmpty ? last : rest.joined(separator: ", ") + " or " + last
  }

  /// One line per format for `--help`: name and summary, in probe order.
  public var helpText: String {
    let width = names.map(\.count).max() ?? 0
    return drivers.map { driver in
      "  " + driver.name + String(repeating: " ", count: width - driver.name.count + 2) + driver.summary
    }.joined(separator: "\n")
  }
}
