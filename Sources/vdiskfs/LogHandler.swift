import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// swift-log backend: one line per message to standard error while in the foreground, to syslog
/// once daemonized (daemonizing points standard error at /dev/null).
struct VDiskLogHandler: LogHandler {
  /// Where every handler writes; flipped once, just before daemonizing.
  static let toSyslog = Atomic<Bool>(false)

  var logLevel: Logger.Level
  var metadata: Logger.Metadata = [:]
  let label: String

  init(label: String, level: Logger.Level) {
    self.label = label
    self.logLevel = level
  }

  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  func log(event: LogEvent) {
    var text = "\(event.message)"
    let merged = metadata.merging(event.metadata ?? [:]) { $1 }
    if !merged.isEmpty {
      text += " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }
    if Self.toSyslog.load(ordering: .relaxed) {
      let priority: Int32 =
        switch event.level {
        case .trace, .debug: LOG_DEBUG
        case .info: LOG_INFO
        case .notice: LOG_NOTICE
        case .warning: LOG_WARNING
        case .error: LOG_ERR
        case .critical: LOG_CRIT
        }
      withVaList([text]) { vsyslog(priority, "%s", $0) }
    } else {
      let prefix = event.level >= .warning ? "vdiskfs: \(event.level): " : "vdiskfs: "
      let line = Array((prefix + text + "\n").utf8)
      line.withUnsafeBytes { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }
  }

  static func bootstrap(level: Logger.Level) {
    LoggingSystem.bootstrap { VDiskLogHandler(label: $0, level: level) }
  }

  /// From now on log to syslog (ident "vdiskfs", facility daemon).
  static func switchToSyslog() {
    openlog("vdiskfs", LOG_PID, LOG_DAEMON)
    toSyslog.store(true, ordering: .relaxed)
  }
}

/// Prints `vdiskfs: <message>` on standard error (user-facing errors of the CLI itself).
func printError(_ message: String) {
  let line = Array("vdiskfs: \(message)\n".utf8)
  line.withUnsafeBytes { _ = Glibc.write(2, $0.baseAddress, $0.count) }
}
