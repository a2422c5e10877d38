import Logging

/// The logger the engine and drivers use for warnings about images (corrupt bit, fallbacks).
/// The CLI bootstraps swift-log's backend; libraries only create loggers with this label.
public func makeLogger(_ label: String = "vdiskfs") -> Logger {
  Logger(label: label)
}
