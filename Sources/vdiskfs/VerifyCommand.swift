import Appliance
import ArgumentParser
import Logging
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// `vdiskfs verify APPLIANCE`: checks every file an OVA's or OVF's manifest (`.mf`) lists against
/// its SHA-1 or SHA-256 digest, with a progress bar on a terminal.
struct VerifyCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "verify",
    abstract: "Check the files of an OVA or OVF appliance against the digests of its manifest (.mf).",
    discussion: """
      Exits 0 when every file listed matches, non-zero naming each file that does not (or when \
      the appliance has no manifest).

      \(ExitCodes.helpText)
      """)

  @Argument(help: "The appliance: an .ova, an .ovf, or a directory holding one.")
  var appliance: String

  func run() throws {
    VDiskLogHandler.bootstrap(level: .warning)
    let logger = Logger(label: "vdiskfs")
    do {
      let opened = try Appliance(path: appliance, logger: logger)
      guard let manifest = try opened.manifest() else {
        throw CLIFailure(
          code: ExitCodes.failure, message: "\(appliance): no manifest (\(opened.manifestName))")
      }
      let bar = isatty(STDERR_FILENO) == 1
      var shown = -1
      let mismatches = try opened.verify(manifest) { done, total in
        guard bar, total > 0 else { return }
        let percent = Int(done * 100 / total)
        guard percent != shown else { return }
        shown = percent
        let filled = percent / 5
        let line =
          "\r[" + String(repeating: "#", count: filled) + String(repeating: " ", count: 20 - filled)
          + "] \(percent)%"
        writeStandardError(line)
      }
      if bar { writeStandardError("\n") }
      for m in mismatches {
        printError("\(m.name): digest mismatch (manifest \(m.expected), file \(m.actual))")
      }
      guard mismatches.isEmpty else {
        throw CLIFailure(
          code: ExitCodes.failure,
          message: "\(appliance): \(mismatches.count) file(s) do not match the manifest: "
            + mismatches.map(\.name).joined(separator: ", "))
      }
      print("\(appliance): \(manifest.entries.count) file(s) match the manifest")
    } catch let error as VDiskError {
      throw CLIFailure(code: ExitCodes.code(for: error), message: error.description)
    }
  }
}

private func writeStandardError(_ text: String) {
  var bytes = Array(text.utf8)
  _ = bytes.withUnsafeMutableBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
}
