import Foundation
import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// External data files (qcow2 spec, "External data file bit", "Raw external data bit").
@Suite struct ExternalDataFileTests {
  @Test(arguments: [false, true])
  func dataLivesInTheExternalFile(raw: Bool) throws {
    let scratch = try Scratch("datafile")
    defer { scratch.remove() }
    let image = scratch.file("d.qcow2")
    var options = ["data_file=d.data", "cluster_size=65536"]
    if raw { options.append("data_file_raw=on") }
    try createInDirectory(scratch, "d.qcow2", size: "4M", options: options)
    var rng = SplitMix64(seed: raw ? 5 : 6)
    var commands: [String] = []
    for i in 0..<30 {
      let length = (1 + rng.next() % 256) * 512
      commands.append("write -P \(1 + i * 7) \((rng.next() % ((4 << 20) - length)) / 512 * 512) \(length)")
    }
    try qemuIoIn(scratch, "d.qcow2", commands + ["write -z 1M 128k"])
    try expectMatchesQemuIn(scratch, "d.qcow2")

    let chain = try openChain(image)
    let layer = try #require(chain.top as? QCOW2Layer)
    #expect(layer.header.externalDataFileName == "d.data")
    #expect(layer.header.dataFileIsRaw == raw)
    #expect(layer.dataFile?.path == scratch.file("d.data"))
    #expect(layer.info.formatSpecific.contains(InfoField("data-file", .string("d.data"))))
    #expect(layer.info.formatSpecific.contains(InfoField("data-file-raw", .bool(raw))))
    // Data extents point into the data file at the guest offset.
    var position: UInt64 = 0
    while position < chain.virtualSize {
      let e = try layer.extent(at: position, maxLength: chain.virtualSize - position)
      if case .data(let host) = e.mapping {
        #expect(host == position)
        #expect(e.file.path == scratch.file("d.data"))
      }
      position += e.length
    }
  }

  @Test func unallocatedClustersOfARawDataFileFollowTheMetadataLikeQemu() throws {
    let scratch = try Scratch("datafile-unalloc")
    defer { scratch.remove() }
    let image = scratch.file("d.qcow2")
    try createInDirectory(scratch, "d.qcow2", size: "1M", options: ["data_file=d.data", "data_file_raw=on"])
    try qemuIoIn(scratch, "d.qcow2", ["write -P 0x11 0 1M"])
    let (_, l2) = try firstL2Table(image)
    try patch(image, at: l2 + 8, 0, width: 8)  // cluster 1: unallocated
    try patch(image, at: l2 + 16, 1, width: 8)  // cluster 2: zero
    try expectMatchesQemuIn(scratch, "d.qcow2")
    #expect(try openChain(image).read(at: 65536, count: 1) == [0])
  }

  @Test func mismatchedHostOffsetIsCorrupt() throws {
    let scratch = try Scratch("datafile-bad")
    defer { scratch.remove() }
    let image = scratch.file("d.qcow2")
    try createInDirectory(scratch, "d.qcow2", size: "1M", options: ["data_file=d.data"])
    try qemuIoIn(scratch, "d.qcow2", ["write -P 0x11 0 256k"])
    let (_, l2) = try firstL2Table(image)
    try patch(image, at: l2 + 8, (1 << 63) | 0x30000, width: 8)
    let chain = try openChain(image)
    expectVDiskError(.corrupt, [image, "does not match guest cluster offset 0x10000"]) {
      _ = try chain.read(at: 65536, count: 1)
    }
  }

  @Test func missingDataFileOrNameIsAClearError() throws {
    let scratch = try Scratch("datafile-missing")
    defer { scratch.remove() }
    let image = scratch.file("d.qcow2")
    try createInDirectory(scratch, "d.qcow2", size: "1M", options: ["data_file=d.data"])
    try sh("rm \(scratch.file("d.data"))")
    expectVDiskError(.notFound, [image, "external data file \(scratch.file("d.data"))", "does not exist"]) {
      _ = try openChain(image)
    }
    // Rename the extension type: the bit stays set but no name is recorded.
    let header = try [UInt8](Data(contentsOf: URL(fileURLWithPath: image)).prefix(4096))
    let magic: [UInt8] = [0x44, 0x41, 0x54, 0x41]
    let at = try #require((104..<4092).first { Array(header[$0..<$0 + 4]) == magic })
    try patch(image, at: UInt64(at), 0x1234_5678, width: 4)
    expectVDiskError(.corrupt, [image, "names no data file"]) { _ = try openChain(image) }
  }
}

/// qemu-io run inside the scratch directory (QEMU 7.2 resolves a relative data file name against
/// its working directory; the spec and vdiskfs resolve it against the image's directory).
func qemuIoIn(_ scratch: Scratch, _ name: String, _ commands: [String]) throws {
  let arguments = commands.map { "-c '\($0)'" }.joined(separator: " ")
  let r = try sh("cd \(scratch.path) && qemu-io -f qcow2 \(arguments) \(name)")
  #expect(!(r.stdout + r.stderr).contains("failed"), "\(r.stdout)\(r.stderr)")
}

/// Like `expectMatchesQemu`, with qemu-img running inside the scratch directory.
func expectMatchesQemuIn(
  _ scratch: Scratch, _ name: String, sourceLocation: SourceLocation = #_sourceLocation
)
  throws
{
  try sh("cd \(scratch.path) && qemu-img convert -O raw \(name) oracle.raw")
  let expected = try [UInt8](Data(contentsOf: URL(fileURLWithPath: scratch.file("oracle.raw"))))
  let actual = try readAll(try openChain(scratch.file(name)))
  let difference = firstDifference(actual, expected)
  #expect(
    difference == nil, "first difference at \(difference.map { hex($0) } ?? "")",
    sourceLocation: sourceLocation)
}

/// `qemu-img create` run inside the scratch directory, so that a relative `data_file` name is
/// created there (qemu-img resolves it against its working directory) and recorded as relative.
func createInDirectory(_ scratch: Scratch, _ name: String, size: String, options: [String]) throws {
  try sh(
    "cd \(scratch.path) && qemu-img create -q -f qcow2 -o \(options.joined(separator: ",")) \(name) \(size)")
}
