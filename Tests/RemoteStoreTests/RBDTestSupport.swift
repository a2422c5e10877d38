import Foundation
import RBDStore
import RemoteStore
import TestSupport
import VDiskCore

/// Options reaching `cluster`, with a short timeout so that a failure shows quickly.
func rbdOptions(_ cluster: CephCluster, timeout: Int = 10) -> RemoteOptions {
  var options = RemoteOptions()
  options.cephConf = cluster.confPath
  options.timeoutSeconds = timeout
  return options
}

/// Bytes that differ everywhere (xorshift64*), so a misplaced read shows.
func rbdTestBytes(_ count: Int, seed: UInt64) -> [UInt8] {
  var state = seed | 1
  var bytes = [UInt8](repeating: 0, count: count)
  for i in 0..<count {
    state ^= state >> 12
    state ^= state << 25
    state ^= state >> 27
    bytes[i] = UInt8(truncatingIfNeeded: (state &* 0x2545_F491_4F6C_DD1D) >> 56)
  }
  return bytes
}

/// A fresh image name for one test (tests share the process's cluster and run in parallel).
func rbdImageName(_ label: String) -> String { "\(label)-\(UInt32.random(in: 0...UInt32.max))" }

/// Imports `bytes` as image `name` of the cluster's pool.
func rbdImport(_ bytes: [UInt8], as name: String, into cluster: CephCluster, scratch: Scratch) throws {
  let file = scratch.file(name + ".raw")
  try Data(bytes).write(to: URL(fileURLWithPath: file))
  try cluster.rbdImport(file: file, image: name)
}

/// The image head (or `snapshot`) as `rbd export` gives it.
func rbdExported(_ cluster: CephCluster, image: String, snapshot: String? = nil, scratch: Scratch) throws
  -> [UInt8]
{
  let file = scratch.file(image + (snapshot.map { "@" + $0 } ?? "") + ".exported")
  try cluster.rbdExport(image: image, snapshot: snapshot, to: file)
  return [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
}

/// The whole object, read in pieces of `piece` bytes through `fetch`.
func readAll(_ object: any RemoteObject, piece: Int = 1 << 20) throws -> [UInt8] {
  var bytes = [UInt8](repeating: 0, count: Int(object.version.size))
  var offset = 0
  while offset < bytes.count {
    let length = min(piece, bytes.count - offset)
    let read = try bytes.withUnsafeMutableBytes { buffer in
      try object.fetch(
        into: UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<offset + length]), at: UInt64(offset))
    }
    guard read == length else { throw CephClusterError("short read: \(read) of \(length) at \(offset)") }
    offset += length
  }
  return bytes
}

/// `fetch` of `count` bytes at `offset`: the bytes it returned.
func fetch(_ object: any RemoteObject, _ count: Int, at offset: UInt64) throws -> [UInt8] {
  var bytes = [UInt8](repeating: 0, count: count)
  let read = try bytes.withUnsafeMutableBytes { try object.fetch(into: $0, at: offset) }
  return Array(bytes[0..<read])
}

/// The error `body` throws, as a VDiskError (nil when it throws none, or another kind).
func vdiskError(_ body: () throws -> Void) -> VDiskError? {
  do {
    try body()
    return nil
  } catch let error as VDiskError {
    return error
  } catch {
    return nil
  }
}

/// Another librbd client (Python's rbd module) that writes to `image` and so holds its exclusive
/// lock with librbd's automatic policy (as QEMU or rbd-nbd do), until `release()`. It would hand
/// the lock over to anyone who asks; the store must not ask.
final class RBDLockHolder: Sendable {
  let folder: String
  private let task: Task<CommandResult, any Error>

  private static let script = """
    import os, sys, time, rados, rbd
    conf, image, folder = sys.argv[1:4]
    cluster = rados.Rados(conffile=conf)
    cluster.connect(timeout=10)
    ioctx = cluster.open_ioctx('rbd')
    handle = rbd.Image(ioctx, image)
    handle.write(b'held', 0)
    open(os.path.join(folder, 'holding'), 'w').close()
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(folder, 'release')) and time.time() < deadline:
        time.sleep(0.05)
    handle.close(); ioctx.close(); cluster.shutdown()
    """

  /// Starts the holder and waits until it holds the lock.
  init(_ cluster: CephCluster, image: String, scratch: Scratch) async throws {
    folder = try scratch.directory("holder-" + image)
    let arguments = ["-c", Self.script, cluster.confPath, image, folder]
    task = Task.detached { try run("/usr/bin/python3", arguments) }
    let deadline = ContinuousClock.now + .seconds(30)
    while !FileManager.default.fileExists(atPath: folder + "/holding") {
      guard ContinuousClock.now < deadline else {
        release()
        throw CephClusterError("the lock holder did not start: \(String(describing: try? await task.value))")
      }
      try await Task.sleep(for: .milliseconds(50))
    }
  }

  /// Tells the holder to close the image and waits for it to exit.
  @discardableResult
  func release() -> Task<CommandResult, any Error> {
    FileManager.default.createFile(atPath: folder + "/release", contents: nil)
    return task
  }
}
