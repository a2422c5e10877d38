import Foundation
import Synchronization

/// A single-node Ceph cluster (one monitor, one memstore OSD, one radosgw on 127.0.0.1, `auth
/// none`) run by scripts/ceph-cluster.sh in a temporary directory, with the S3 and RBD helpers
/// the remote-store tests need. `shared()` starts one per test process, on first use, and stops
/// it when the process exits; `start()` makes a private one (for tests that stop it), which the
/// caller stops in a `defer`. Either way a watcher started by the script stops the cluster if
/// the test process dies without cleaning up. Missing Ceph tools make `start` throw: a test
/// needing the cluster fails, it does not skip.
public final class CephCluster: Sendable {
  /// The cluster's folder (daemons' data, logs, sockets); removed by `stop()`.
  public let directory: String
  /// The ceph.conf clients use (`CEPH_CONF`, `-o ceph_conf=`, `rbd --conf`).
  public let confPath: String
  /// radosgw's S3 endpoint, `http://127.0.0.1:PORT`.
  public let endpoint: String
  public let accessKey: String
  public let secretKey: String
  /// The RBD pool the script made.
  public let pool = "rbd"

  private init(directory: String, environment: [String: String]) throws {
    self.directory = directory
    guard let conf = environment["CEPH_CONF"], let endpoint = environment["AWS_ENDPOINT_URL"],
      let access = environment["AWS_ACCESS_KEY_ID"], let secret = environment["AWS_SECRET_ACCESS_KEY"]
    else {
      throw CephClusterError("ceph-cluster.sh start printed no complete environment: \(environment)")
    }
    confPath = conf
    self.endpoint = endpoint
    accessKey = access
    secretKey = secret
  }

  /// scripts/ceph-cluster.sh, found from this file's place in the repository.
  public static let script: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.appendingPathComponent("scripts/ceph-cluster.sh").path
  }()

  /// Starts a private cluster (about 2.5 s); stop it with `stop()` in a `defer`.
  public static func start() throws -> CephCluster {
    let scratch = try Scratch("ceph")
    // The script wants to make the folder itself (an existing one with a cluster is refused).
    let directory = scratch.path + "/cluster"
    do {
      let result = try run(script, ["start", directory, String(getpid())])
      var environment: [String: String] = [:]
      for line in result.stdout.split(separator: "\n") {
        guard let equals = line.firstIndex(of: "=") else { continue }
        environment[String(line[..<equals])] = String(line[line.index(after: equals)...])
      }
      let cluster = try CephCluster(directory: directory, environment: environment)
      return cluster
    } catch {
      _ = try? run(script, ["stop", directory], check: false)
      scratch.remove()
      throw error
    }
  }

  /// The cluster of this test process, started on first use and stopped at exit.
  public static func shared() throws -> CephCluster {
    try sharedCluster.withLock { state in
      if let cluster = state.cluster { return cluster }
      if let failure = state.failure { throw failure }
      do {
        let cluster = try start()
        state.cluster = cluster
        atexit { CephCluster.stopShared() }
        return cluster
      } catch {
        // One failed start is enough: every later test gets the same error at once.
        state.failure = CephClusterError("the shared Ceph cluster did not start: \(error)")
        throw error
      }
    }
  }

  private static func stopShared() {
    let cluster = sharedCluster.withLock { state -> CephCluster? in
      defer { state.cluster = nil }
      return state.cluster
    }
    try? cluster?.stop()
  }

  /// Kills every daemon of the cluster (waiting until each is gone) and removes its folder.
  public func stop() throws {
    try run(Self.script, ["stop", directory])
    try? FileManager.default.removeItem(atPath: (directory as NSString).deletingLastPathComponent)
  }

  /// The daemons' process ids (monitor, OSD, radosgw), while it runs.
  public func daemonPIDs() throws -> [Int32] {
    try String(contentsOfFile: directory + "/pids", encoding: .utf8).split(separator: "\n")
      .compactMap { $0.split(separator: " ").first.flatMap { Int32($0) } }
  }

  /// What a client process needs to reach the cluster: CEPH_CONF and the AWS variables.
  public var environment: [String: String] {
    [
      "CEPH_CONF": confPath, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": accessKey,
      "AWS_SECRET_ACCESS_KEY": secretKey, "AWS_REGION": "us-east-1",
    ]
  }

  /// Kills radosgw alone (S3 goes away; the monitor and OSD stay).
  public func stopGateway() throws { try run(Self.script, ["rgw-stop", directory]) }

  /// Starts radosgw again on its port and waits until it answers.
  public func startGateway() throws { try run(Self.script, ["rgw-start", directory]) }

  // MARK: S3, through the curl CLI (path-style, SigV4)

  /// `curl` with SigV4 signing and the payload header radosgw wants; fails on HTTP errors.
  @discardableResult
  public func s3(_ arguments: [String]) throws -> CommandResult {
    try run(
      "curl",
      [
        "-sS", "--fail-with-body", "--max-time", "60", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user",
        "\(accessKey):\(secretKey)", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
      ] + arguments)
  }

  /// The path-style URL of a bucket or an object.
  public func url(bucket: String, key: String? = nil) -> String {
    endpoint + "/" + bucket + (key.map { "/" + $0 } ?? "")
  }

  public func createBucket(_ bucket: String) throws {
    try s3(["-X", "PUT", url(bucket: bucket)])
  }

  /// Uploads `file` as `key` into a new bucket of its own (`PREFIX-` and 8 random characters):
  /// `s3://BUCKET/KEY`.
  public func putInNewBucket(_ file: String, key: String, prefix: String) throws -> String {
    let bucket = "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
    try createBucket(bucket)
    try putObject(bucket: bucket, key: key, file: file)
    return "s3://\(bucket)/\(key)"
  }

  public func putObject(bucket: String, key: String, file: String) throws {
    try s3(["-T", file, url(bucket: bucket, key: key)])
  }

  public func getObject(bucket: String, key: String, to file: String) throws {
    try s3(["-o", file, url(bucket: bucket, key: key)])
  }

  public func deleteObject(bucket: String, key: String) throws {
    try s3(["-X", "DELETE", url(bucket: bucket, key: key)])
  }

  // MARK: RBD, through the rbd CLI

  @discardableResult
  public func rbd(_ arguments: [String]) throws -> CommandResult {
    try run("rbd", ["--conf", confPath] + arguments)
  }

  /// Imports `file` as a new image (format 2, with exclusive-lock among its default features).
  public func rbdImport(file: String, pool: String = "rbd", image: String) throws {
    try rbd(["import", "--no-progress", file, "\(pool)/\(image)"])
  }

  public func rbdSnapshot(pool: String = "rbd", image: String, snapshot: String) throws {
    try rbd(["snap", "create", "--no-progress", "\(pool)/\(image)@\(snapshot)"])
  }

  /// Exports the image head, or `snapshot`, to `file` (replaced if it exists).
  public func rbdExport(pool: String = "rbd", image: String, snapshot: String? = nil, to file: String) throws
  {
    try? FileManager.default.removeItem(atPath: file)
    try rbd(["export", "--no-progress", "\(pool)/\(image)" + (snapshot.map { "@" + $0 } ?? ""), file])
  }

  /// Makes an RBD namespace in `pool`; images in it are `POOL/NAMESPACE/IMAGE` (pass
  /// `"POOL/NAMESPACE"` as the `pool` of the other helpers).
  public func rbdNamespaceCreate(pool: String = "rbd", namespace: String) throws {
    try rbd(["namespace", "create", "--pool", pool, "--namespace", namespace])
  }

  public func rbdRemove(pool: String = "rbd", image: String) throws {
    try rbd(["rm", "--no-progress", "\(pool)/\(image)"])
  }
}

public struct CephClusterError: Error, CustomStringConvertible, Sendable {
  public var description: String
  public init(_ description: String) { self.description = description }
}

private struct SharedCluster {
  var cluster: CephCluster?
  var failure: CephClusterError?
}

private let sharedCluster = Mutex(SharedCluster())
