import ImageFormats
import VDiskCore

/// `--format` / `-o format=` and the format lists of the help text, all read from
/// `FormatRegistry.standard`: a new format shows up here without an edit.
enum FormatOption {
  static var registry: FormatRegistry { .standard }

  /// "qcow2, vmdk, vhdx, vpc, vdi or raw" (probe order).
  static var names: String { registry.namesText }

  /// Help of `--format` for commands that open an image.
  static var help: String { "Image format: \(names) (default: probed; raw only if nothing else matches)." }

  /// The table of formats for `--help` discussions.
  static var table: String { "Formats (as qemu-img names them), in probe order:\n" + registry.helpText }

  /// `--format NAME` as a driver (nil: probe); an unknown name is a usage error naming the known ones.
  static func parse(_ name: String?) throws -> (any FormatDriver.Type)? {
    guard let name else { return nil }
    guard let driver = registry.driver(named: name) else {
      throw CLIFailure(
        code: ExitCodes.usage,
        message: "unknown format '\(name)' (known: \(registry.names.joined(separator: ", ")))")
    }
    return driver
  }
}
