import ImageFormats
import TestSupport
import Testing

/// The CLI's format lists come from the registry: every registered format is in the help of
/// every command that takes `--format`, and an unknown name is refused naming the known ones.
@Suite struct FormatHelpTests {
  /// Help text with line wrapping undone.
  private func help(_ arguments: [String]) throws -> String {
    try run(vdiskfsBinary, arguments).stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
  }

  @Test func helpListsEveryRegisteredFormat() throws {
    let registry = FormatRegistry.standard
    let root = try help(["--help"])
    #expect(root.contains("(\(registry.namesText); with its backing chain)"))
    for driver in registry.drivers {
      #expect(root.contains("\(driver.name) \(driver.summary)"), "\(driver.name)")
    }
    for command in ["mount", "info", "map"] {
      let text = try help([command, "--help"])
      #expect(text.contains("Image format: \(registry.namesText) (default: probed"), "\(command)")
    }
    #expect(try help(["mount", "--help"]).contains("format=FMT (\(registry.namesText))"))
  }

  @Test func unknownFormatIsAUsageErrorNamingTheKnownOnes() throws {
    let scratch = try Scratch("cli")
    defer { scratch.remove() }
    let image = scratch.file("a.qcow2")
    try Qemu.create(image, size: "1M")
    let known = FormatRegistry.standard.names.joined(separator: ", ")
    for arguments in [["info", "--format", "vhd", image], [image, scratch.path, "-o", "ro,format=vhd"]] {
      let r = try run(vdiskfsBinary, arguments, check: false)
      #expect(r.status == 2, "\(arguments)")
      #expect(r.stderr.contains("unknown format 'vhd' (known: \(known))"), "\(arguments)")
    }
    // Names are case-insensitive, as before.
    #expect(try run(vdiskfsBinary, ["info", "--format", "QCOW2", image]).stdout.contains("qcow2"))
  }
}
