import Logging
import Synchronization

/// Collects log messages for assertions: each line is "LEVEL MESSAGE", followed by the metadata
/// when there is any.
public final class CapturedLogs: Sendable {
  private let lines = Mutex<[String]>([])

  public init() {}

  public func append(_ line: String) { lines.withLock { $0.append(line) } }
  public var all: [String] { lines.withLock { $0 } }
  /// Lines at warning level or above.
  public var warnings: [String] { all.filter { !$0.hasPrefix("debug") && !$0.hasPrefix("trace") } }
  public func contains(_ fragment: String) -> Bool { all.contains { $0.contains(fragment) } }

  /// A logger writing here.
  public func logger(label: String = "test") -> Logger {
    Logger(label: label) { _ in CapturingLogHandler(store: self) }
  }
}

/// A swift-log handler that records into a `CapturedLogs`.
public struct CapturingLogHandler: LogHandler {
  public let store: CapturedLogs
  public var metadata: Logger.Metadata = [:]
  public var logLevel: Logger.Level = .trace

  public init(store: CapturedLogs) { self.store = store }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    let extra = (event.metadata ?? [:]).isEmpty ? "" : " \(event.metadata ?? [:])"
    store.append("\(event.level) \(event.message)\(extra)")
  }
}
