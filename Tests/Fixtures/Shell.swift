import Foundation

/// The outcome of running a command.
public struct CommandResult: Sendable {
  public var status: Int32
  public var stdout: String
  public var stderr: String
  public init(status: Int32, stdout: String, stderr: String) {
    self.status = status
    self.stdout = stdout
    self.stderr = stderr
  }
}

public struct CommandFailed: Error, CustomStringConvertible {
  public var command: [String]
  public var result: CommandResult
  public init(command: [String], result: CommandResult) {
    self.command = command
    self.result = result
  }
  public var description: String {
    "command failed (\(result.status)): \(command.joined(separator: " "))\n\(result.stderr)\(result.stdout)"
  }
}

/// Runs `executable` (looked up in PATH) with `arguments`; throws `CommandFailed` on a non-zero
/// exit unless `check` is false. Standard output and error are collected (keep them small).
@discardableResult
public func run(_ executable: String, _ arguments: [String], check: Bool = true, input: Data? = nil) throws
  -> CommandResult
{
  let process = Process()
  process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
  process.arguments = [executable] + arguments
  var environment = ProcessInfo.processInfo.environment
  environment["PATH"] = (environment["PATH"] ?? "") + ":/usr/sbin:/sbin:/usr/local/sbin"
  process.environment = environment
  let out = Pipe()
  let err = Pipe()
  process.standardOutput = out
  process.standardError = err
  let inPipe = Pipe()
  process.standardInput = input == nil ? FileHandle.nullDevice : inPipe
  try process.run()
  if let input {
    inPipe.fileHandleForWriting.write(input)
    try? inPipe.fileHandleForWriting.close()
  }
  // Drain both pipes concurrently so a chatty command cannot block on a full pipe.
  let errData = LockedData()
  let group = DispatchGroup()
  group.enter()
  DispatchQueue.global().async {
    errData.set(err.fileHandleForReading.readDataToEndOfFile())
    group.leave()
  }
  let outData = out.fileHandleForReading.readDataToEndOfFile()
  group.wait()
  process.waitUntilExit()
  let result = CommandResult(
    status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
    stderr: String(decoding: errData.get(), as: UTF8.self))
  if check && result.status != 0 {
    throw CommandFailed(command: [executable] + arguments, result: result)
  }
  return result
}

/// Runs a shell snippet with bash -c.
@discardableResult
public func sh(_ script: String, check: Bool = true) throws -> CommandResult {
  try run("bash", ["-c", script], check: check)
}

final class LockedData: @unchecked Sendable {
  private let lock = NSLock()
  private var data = Data()
  func set(_ d: Data) { lock.withLock { data = d } }
  func get() -> Data { lock.withLock { data } }
}

/// True when this process runs as root (mount and loop tests need it; in CI they must run).
public var isRoot: Bool { getuid() == 0 }

/// True when FUSE mounts can be attempted here.
public var canMountFUSE: Bool { isRoot && FileManager.default.fileExists(atPath: "/dev/fuse") }
