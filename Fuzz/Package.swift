// swift-tools-version: 6.1
// Fuzz targets (libFuzzer + AddressSanitizer), one per parser: each opens an image of its format
// from the fuzzer's bytes in memory and reads through it (Sources/FuzzHarness). A separate
// package, because a fuzz target has no `main` of its own (libFuzzer's is linked in by
// `-sanitize=fuzzer`) and so cannot be built by the root package's plain `swift build`.
// `make fuzz` builds and runs them (scripts/fuzz.sh).
//
// As in Benchmarks/, Sources/<Target> are symlinks to the root's source folders, and every
// folder in Sources/Formats is a target here.
import Foundation
import PackageDescription

let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let systemPackage = Target.Dependency.product(name: "SystemPackage", package: "swift-system")

let formatNames =
  ((try? FileManager.default.contentsOfDirectory(
    atPath: Context.packageDirectory + "/Sources/Formats")) ?? []).filter { !$0.hasPrefix(".") }.sorted()
let formatLibraries = formatNames.map {
  Target.target(
    name: $0, dependencies: ["VDiskCore", "CZlib", "CZstd", "CBzip2", "CLzma", logging],
    path: "Sources/Formats/\($0)")
}

/// `Fuzz<NAME>`: one target per format, in Sources/Fuzz<NAME>, plus FuzzPartitions (MBR/EBR and
/// GPT), FuzzChain (a two-layer chain of any formats, written through) and FuzzVMDKDescriptor (a
/// text descriptor with its extents) and FuzzOVA (an OVA appliance: tar, OVF, its disks).
let fuzzTargets =
  formatNames.map {
    Target.executableTarget(name: "Fuzz\($0)", dependencies: ["FuzzHarness", .target(name: $0)])
  }
  + ["FuzzPartitions", "FuzzChain", "FuzzVMDKDescriptor", "FuzzOVA"].map {
    Target.executableTarget(name: $0, dependencies: ["FuzzHarness", "ImageFormats"])
  }

let package = Package(
  name: "vdiskfs-fuzz",
  platforms: [.macOS(.v15)],
  dependencies: [
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
  ],
  targets: [
    .target(name: "CZlib", linkerSettings: [.linkedLibrary("z"), .linkedLibrary("deflate")]),
    .target(name: "CZstd", linkerSettings: [.linkedLibrary("zstd")]),
    .target(name: "CBzip2", linkerSettings: [.linkedLibrary("bz2")]),
    .target(name: "CLzma", linkerSettings: [.linkedLibrary("lzma")]),
    .target(name: "CLinux", cSettings: [.define("_GNU_SOURCE")]),
    .target(name: "VDiskCore", dependencies: ["CLinux", systemPackage, logging]),
    .target(name: "Partitions", dependencies: ["VDiskCore", logging]),
    .target(name: "RemoteStore", dependencies: ["VDiskCore", systemPackage, logging]),
    .target(
      name: "ImageFormats",
      dependencies: ["VDiskCore", "RemoteStore", logging]
        + formatNames.map { Target.Dependency.target(name: $0) }),
    .target(name: "Appliance", dependencies: ["VDiskCore", "ImageFormats", logging]),
    .target(
      name: "FuzzHarness", dependencies: ["VDiskCore", "Partitions", "ImageFormats", "Appliance", logging]),
  ] + formatLibraries + fuzzTargets
)
