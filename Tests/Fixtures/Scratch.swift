import Foundation

/// A temporary directory for one test, removed by `remove()` (call it in a `defer`).
public struct Scratch: Sendable {
  public let path: String

  public init(_ label: String = "test") throws {
    let template = "/tmp/vdiskfs-\(label)-XXXXXX"
    var bytes = Array(template.utf8CString)
    guard
      let made = bytes.withUnsafeMutableBufferPointer({ buffer in
        buffer.baseAddress.flatMap { mkdtemp($0) }
      })
    else {
      throw CocoaError(.fileWriteUnknown)
    }
    path = String(cString: made)
  }

  /// Absolute path of `name` inside the scratch directory.
  public func file(_ name: String) -> String { path + "/" + name }

  /// Makes a subdirectory and returns its path.
  @discardableResult
  public func directory(_ name: String) throws -> String {
    let p = file(name)
    try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
    return p
  }

  public func remove() {
    try? FileManager.default.removeItem(atPath: path)
  }
}
