import Foundation

/// `qemu-storage-daemon` holding `image` open for writing (as a running VM does: QEMU's write
/// locks taken), through a writable NBD export on a Unix socket; `stop()` ends it (SIGTERM, then
/// waits for it to exit).
public struct QemuWriter: Sendable {
  public let pid: String

  /// `driver`: the format driver over the file (qcow2, raw, parallels, …).
  public init(_ image: String, driver: String, socket: String) throws {
    pid = try sh(
      """
      qemu-storage-daemon --blockdev driver=file,node-name=f,filename=\(image) \
        --blockdev driver=\(driver),node-name=d,file=f \
        --nbd-server addr.type=unix,addr.path=\(socket) \
        --export type=nbd,id=e,node-name=d,writable=on >/dev/null 2>&1 & echo $!
      """
    ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    do {
      try sh("for i in $(seq 1 100); do [ -S \(socket) ] && exit 0; sleep 0.05; done; exit 1")
    } catch {
      stop()
      throw error
    }
  }

  public func stop() {
    _ = try? sh("kill -TERM \(pid); while kill -0 \(pid) 2>/dev/null; do sleep 0.05; done")
  }
}
