import Foundation

/// Path of the built `vdiskfs` executable: `$VDISKFS_BIN`, else next to the test bundle in the
/// build directory (`swift build` puts both there).
public var vdiskfsBinary: String {
  if let env = ProcessInfo.processInfo.environment["VDISKFS_BIN"], !env.isEmpty { return env }
  let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
  var dir = exe.deletingLastPathComponent()
  for _ in 0..<4 {
    let candidate = dir.appendingPathComponent("vdiskfs").path
    if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    dir = dir.deletingLastPathComponent()
  }
  return "vdiskfs"
}
