import Foundation
import RBDStore
import RemoteStore
import TestSupport
import Testing
import VDiskCore

/// The RBD store's failures: one clear error of the documented kind, and never a hang.
@Suite struct RBDStoreErrorTests {
  @Test func missingPoolImageAndSnapshotAreNotFound() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("rbd-missing")
    defer { scratch.remove() }
    let name = rbdImageName("present")
    try rbdImport(rbdTestBytes(4096, seed: 11), as: name, into: cluster, scratch: scratch)
    let cases = [
      ("rbd:nosuchpool/\(name)", "pool nosuchpool does not exist"),
      ("rbd:rbd/nosuchimage", "image nosuchimage does not exist in pool rbd"),
      ("rbd:rbd/\(name)@nosuchsnap", "snapshot nosuchsnap of image \(name) does not exist"),
    ]
    for (location, message) in cases {
      for writable in [false, true] {
        let error = vdiskError {
          _ = try RBDStore.open(location, writable: writable, options: rbdOptions(cluster))
        }
        #expect(error?.kind == .notFound, "\(location)")
        #expect(error?.path == location)
        #expect(error?.description.contains(message) == true, "\(String(describing: error))")
      }
    }
  }

  /// `rbd:POOL/NAMESPACE/IMAGE`: the image of that namespace (not the one of the same name in
  /// the pool's default namespace); a missing namespace, or an image missing in it, is not found.
  @Test func imagesInANamespaceAreReadAndAMissingNamespaceIsNotFound() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("rbd-namespace")
    defer { scratch.remove() }
    let namespace = rbdImageName("ns")
    try cluster.rbdNamespaceCreate(namespace: namespace)
    let name = rbdImageName("img")
    let inNamespace = rbdTestBytes(70_000, seed: 21)
    try rbdImport(rbdTestBytes(70_000, seed: 22), as: name, into: cluster, scratch: scratch)
    defer { try? cluster.rbdRemove(image: name) }
    let file = scratch.file("namespaced.raw")
    try Data(inNamespace).write(to: URL(fileURLWithPath: file))
    try cluster.rbdImport(file: file, pool: "rbd/\(namespace)", image: name)
    defer { try? cluster.rbdRemove(pool: "rbd/\(namespace)", image: name) }
    let object = try RBDStore.open(
      "rbd:rbd/\(namespace)/\(name)", writable: false, options: rbdOptions(cluster))
    #expect(try readAll(object) == inNamespace)
    let cases = [
      ("rbd:rbd/nosuchnamespace/\(name)", "namespace nosuchnamespace does not exist in pool rbd"),
      ("rbd:rbd/\(namespace)/nosuchimage", "image nosuchimage does not exist in namespace rbd/\(namespace)"),
    ]
    for (location, message) in cases {
      let error = vdiskError {
        _ = try RBDStore.open(location, writable: false, options: rbdOptions(cluster))
      }
      #expect(error?.kind == .notFound, "\(location)")
      #expect(error?.description.contains(message) == true, "\(String(describing: error))")
    }
  }

  @Test func malformedLocationsAreInvalidArguments() throws {
    for location in [
      "rbd:", "rbd:pool", "rbd:/image", "rbd:pool/", "rbd:pool/ns/image/extra", "rbd:pool//image",
      "rbd:pool/n@s/image", "rbd:pool/ns/", "rbd:pool/image@", "rbd:pool/a@b@c",
      "rbd:po@ol/image", "rbd:pool/@snap", "s3://b/k",
    ] {
      // Parsing comes first: no cluster is needed or contacted.
      var options = RemoteOptions()
      options.cephConf = "/nonexistent/ceph.conf"
      let error = vdiskError { _ = try RBDStore.open(location, writable: false, options: options) }
      #expect(error?.kind == .invalidArgument, "\(location): \(String(describing: error))")
      #expect(error?.description.contains("rbd:POOL[/NAMESPACE]/IMAGE[@SNAP]") == true)
    }
  }

  @Test func aMissingConfigurationIsNotFound() {
    var options = RemoteOptions()
    options.cephConf = "/nonexistent/ceph.conf"
    let error = vdiskError { _ = try RBDStore.open("rbd:rbd/image", writable: false, options: options) }
    #expect(error?.kind == .notFound)
    #expect(error?.description.contains("/nonexistent/ceph.conf") == true)
  }

  /// A stopped cluster: an open image's reads fail as transient (the cache retries them) and a
  /// new open fails with `.io`, each within the timeout, not after librados' five minutes.
  @Test func aStoppedClusterFailsWithinTheTimeout() throws {
    let scratch = try Scratch("rbd-stopped")
    defer { scratch.remove() }
    let cluster = try CephCluster.start()
    var running = true
    defer { if running { try? cluster.stop() } }
    let name = rbdImageName("stopped")
    let content = rbdTestBytes(8 << 20, seed: 12)
    try rbdImport(content, as: name, into: cluster, scratch: scratch)
    // The configuration outlives the cluster's folder.
    let conf = scratch.file("ceph.conf")
    try FileManager.default.copyItem(atPath: cluster.confPath, toPath: conf)
    var options = rbdOptions(cluster, timeout: 3)
    options.cephConf = conf

    let object = try RBDStore.open("rbd:rbd/\(name)", writable: false, options: options)
    #expect(try fetch(object, 4096, at: 0) == Array(content.prefix(4096)))
    try cluster.stop()
    running = false

    let clock = ContinuousClock()
    var failure: RemoteFailure?
    let readTime = clock.measure {
      do {
        _ = try fetch(object, 4096, at: 5 << 20)
      } catch {
        failure = error as? RemoteFailure
      }
    }
    #expect(failure?.kind == .transient, "\(String(describing: failure))")
    #expect(readTime < timeBudget(.seconds(8)), "the read took \(readTime)")

    var error: VDiskError?
    let openTime = clock.measure {
      error = vdiskError { _ = try RBDStore.open("rbd:rbd/\(name)", writable: false, options: options) }
    }
    #expect(error?.kind == .io)
    #expect(
      error?.description.contains("cannot reach the Ceph cluster") == true, "\(String(describing: error))")
    #expect(openTime < timeBudget(.seconds(8)), "the open took \(openTime)")
  }
}
