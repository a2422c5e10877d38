import Foundation

/// Mounts `image` read-only through the real binary, runs `body` with the mount point, and
/// unmounts (lazily if need be) whatever `body` did: for formats whose mount tests only read.
public func withReadOnlyMount(
  _ image: String, in scratch: Scratch, arguments: [String] = [], _ body: (String) throws -> Void
) throws {
  let mnt = try scratch.directory("mnt-\(UUID().uuidString.prefix(8))")
  try run("timeout", ["60", vdiskfsBinary, image, mnt, "-o", "ro"] + arguments)
  defer {
    if (try? run("fusermount3", ["-u", mnt], check: false))?.status != 0 {
      _ = try? run("fusermount3", ["-u", "-z", mnt], check: false)
    }
    for _ in 0..<50 where mountTable().contains(mnt) { usleep(20_000) }
  }
  try body(mnt)
}

/// The mount points /proc/mounts lists.
public func mountTable() -> Set<String> {
  guard let text = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return [] }
  return Set(
    text.split(separator: "\n").compactMap { $0.split(separator: " ").dropFirst().first.map(String.init) })
}
