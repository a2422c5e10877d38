import Foundation
import Testing

/// What `qemu-img check` says about an image: its exit status (0 clean, 2 corrupt, 3 leaks
/// only) and the counts it prints.
public struct QemuCheckReport: CustomStringConvertible, Sendable {
  public var status: Int32
  public var output: String

  public init(status: Int32, output: String) {
    self.status = status
    self.output = output
  }

  public var errors: Int { count(before: "errors were found") + count(before: "error was found") }
  public var leaks: Int {
    count(before: "leaked clusters were found") + count(before: "leaked cluster was found")
  }
  /// Exit 0, "No errors were found" and no line saying ERROR: no corruption and no leaks.
  public var isClean: Bool {
    status == 0 && output.contains("No errors were found") && !output.contains("ERROR")
  }
  /// No corruption; leaked clusters allowed (exit 0 or 3): what a crash may leave behind.
  public var isUncorrupted: Bool {
    (status == 0 || status == 3) && errors == 0 && !output.contains("ERROR")
  }
  public var description: String { "qemu-img check exit \(status):\n\(output)" }

  private func count(before phrase: String) -> Int {
    for line in output.split(separator: "\n") where line.contains(phrase) {
      return Int(line.split(separator: " ").first ?? "") ?? 0
    }
    return 0
  }
}

extension Qemu {
  /// `qemu-img check -f FORMAT [-r all] IMAGE`; a failing check is a report, not a throw.
  public static func check(_ image: String, format: String, repair: Bool = false) throws -> QemuCheckReport {
    let r = try run(
      "qemu-img", ["check", "-f", format] + (repair ? ["-r", "all"] : []) + [image], check: false)
    return QemuCheckReport(status: r.status, output: r.stdout + r.stderr)
  }

  /// `qemu-img compare -f FORMAT -F raw IMAGE RAW`: whether identical, and what it said.
  public static func identical(_ image: String, format: String, to raw: String) throws -> (Bool, String) {
    let r = try run("qemu-img", ["compare", "-f", format, "-F", "raw", image, raw], check: false)
    return (r.status == 0 && r.stdout.contains("Images are identical"), r.stdout + r.stderr)
  }

  /// Requires `qemu-img check` to find `image` clean, or (with `leaksAllowed`, for formats that
  /// can leak space, after a crash) at least free of corruption.
  public static func expectCheck(
    _ image: String, format: String, leaksAllowed: Bool = false, _ context: String,
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let report = try check(image, format: format)
    let ok = leaksAllowed ? report.isUncorrupted : report.isClean
    if !ok { Issue.record("\(context): \(report)", sourceLocation: sourceLocation) }
  }

  /// Requires `qemu-img check` to find `image` clean and `qemu-img compare` to find it identical
  /// to the raw file `raw` (a differential run's mirror).
  public static func expectCleanAndIdentical(
    _ image: String, format: String, to raw: String, _ context: String,
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let report = try check(image, format: format)
    #expect(report.isClean, "\(context): \(report)", sourceLocation: sourceLocation)
    let (same, output) = try identical(image, format: format, to: raw)
    #expect(same, "\(context): \(output)", sourceLocation: sourceLocation)
  }
}
