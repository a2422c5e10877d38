import Foundation
import TestSupport
import Testing

/// The test cluster itself (scripts/ceph-cluster.sh through `CephCluster`): it starts, serves S3
/// and RBD, and leaves no process or folder behind when stopped.
@Suite struct CephClusterTests {
  @Test func startsServesS3AndRBDAndStopsWithoutLeftovers() throws {
    let scratch = try Scratch("ceph-cluster-test")
    defer { scratch.remove() }
    let started = ContinuousClock.now
    let cluster = try CephCluster.start()
    var running = true
    defer { if running { try? cluster.stop() } }
    let startTime = ContinuousClock.now - started
    let pids = try cluster.daemonPIDs()
    #expect(pids.count == 3)
    #expect(pids.allSatisfy(isAlive))

    // S3: a bucket, an object put and read back byte for byte.
    let file = scratch.file("object.bin")
    let content = Data((0..<3_000_001).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) })
    try content.write(to: URL(fileURLWithPath: file))
    try cluster.createBucket("fixture")
    try cluster.putObject(bucket: "fixture", key: "dir/object.bin", file: file)
    let back = scratch.file("back.bin")
    try cluster.getObject(bucket: "fixture", key: "dir/object.bin", to: back)
    #expect(try Data(contentsOf: URL(fileURLWithPath: back)) == content)

    // RBD: an import, a snapshot and exports of both.
    try cluster.rbdImport(file: file, image: "fixture")
    try cluster.rbdSnapshot(image: "fixture", snapshot: "s1")
    let exported = scratch.file("exported.bin")
    try cluster.rbdExport(image: "fixture", snapshot: "s1", to: exported)
    #expect(try Data(contentsOf: URL(fileURLWithPath: exported)) == content)
    let info = try cluster.rbd(["info", "rbd/fixture"]).stdout
    #expect(info.contains("exclusive-lock"))

    let stopped = ContinuousClock.now
    try cluster.stop()
    running = false
    let stopTime = ContinuousClock.now - stopped
    #expect(!pids.contains(where: isAlive))
    #expect(!FileManager.default.fileExists(atPath: cluster.directory))
    print("ceph cluster: start \(startTime), stop \(stopTime)")
  }

  @Test func theSharedClusterIsStartedOnceAndServesS3() throws {
    let first = try CephCluster.shared()
    let second = try CephCluster.shared()
    #expect(first === second)
    let result = try run("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", first.endpoint + "/"])
    #expect(result.stdout == "200")
  }
}

/// Whether `pid` is a live process: neither gone nor a zombie (killed daemons can linger as
/// zombies on these machines, so `kill(pid, 0)` would say yes).
func isAlive(_ pid: Int32) -> Bool {
  guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = stat.lastIndex(of: ")")
  else { return false }
  let state = stat[stat.index(after: close)...].split(separator: " ").first
  return state != nil && state != "Z" && state != "X"
}
