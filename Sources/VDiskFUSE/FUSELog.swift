import CFuse
import Logging
import Synchronization

/// libfuse's log hook is process-wide (`fuse_set_log_func` takes no context), so the logger it
/// feeds is too: the one piece of global state of this module, guarded by a mutex.
private let fuseLogger = Mutex<Logger?>(nil)

/// Routes libfuse's own messages (mount and option errors) into `logger` instead of
/// stderr, which a daemon has pointed at /dev/null.
public func installFUSELogRouting(_ logger: Logger) {
  fuseLogger.withLock { $0 = logger }
  cfuse_set_log_sink { level, message in
    guard let message, let logger = fuseLogger.withLock({ $0 }) else { return }
    logger.log(level: Logger.Level(fuse: level), "\(String(cString: message))", source: "libfuse")
  }
}

extension Logger.Level {
  /// libfuse's levels are syslog's.
  init(fuse level: fuse_log_level) {
    switch level {
    case FUSE_LOG_EMERG, FUSE_LOG_ALERT, FUSE_LOG_CRIT: self = .critical
    case FUSE_LOG_ERR: self = .error
    case FUSE_LOG_WARNING: self = .warning
    case FUSE_LOG_NOTICE: self = .notice
    case FUSE_LOG_INFO: self = .info
    default: self = .debug
    }
  }
}
