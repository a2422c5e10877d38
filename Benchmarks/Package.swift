// swift-tools-version: 6.1
// Micro benchmarks of vdiskfs's hot path (ordo-one/benchmark) and a fixed read workload for
// `valgrind --tool=callgrind`. A separate package, so the root package stays free of benchmark
// dependencies.
//
// The root package has no library products, so a `.package(path: "..")` dependency cannot reach
// VDiskCore / QCOW2 / ImageFormats. Instead Sources/<Target> here are symlinks to the root's
// source folders: the same code compiled in release mode in this package, no edit to the root.
// Sources/Formats is one symlink to the root's format folders, and every folder in it is a
// target here, so a new format needs no edit in this package.
import Foundation
import PackageDescription

let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let systemPackage = Target.Dependency.product(name: "SystemPackage", package: "swift-system")

/// The root's format targets (Sources/Formats/NAME), each given every C shim a format may use.
let formatNames =
  ((try? FileManager.default.contentsOfDirectory(
    atPath: Context.packageDirectory + "/Sources/Formats")) ?? []).filter { !$0.hasPrefix(".") }.sorted()
let formatLibraries = formatNames.map {
  Target.target(
    name: $0, dependencies: ["VDiskCore", "CZlib", "CZstd", "CBzip2", "CLzma", logging], path: "Sources/Formats/\($0)")
}

let package = Package(
  name: "vdiskfs-benchmarks",
  platforms: [.macOS(.v15)],
  dependencies: [
    .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
  ],
  targets: [
    // The root's sources (symlinks), built as in the root's Package.swift.
    .target(name: "CZlib", linkerSettings: [.linkedLibrary("z"), .linkedLibrary("deflate")]),
    .target(name: "CZstd", linkerSettings: [.linkedLibrary("zstd")]),
    .target(name: "CBzip2", linkerSettings: [.linkedLibrary("bz2")]),
    .target(name: "CLzma", linkerSettings: [.linkedLibrary("lzma")]),
    .target(
      name: "CFuse", cSettings: [.define("_FILE_OFFSET_BITS", to: "64"), .define("_GNU_SOURCE")],
      linkerSettings: [.linkedLibrary("fuse3")]),
    .target(name: "CLinux", cSettings: [.define("_GNU_SOURCE")]),
    .target(name: "VDiskCore", dependencies: ["CLinux", systemPackage, logging]),
    .target(name: "RemoteStore", dependencies: ["VDiskCore", systemPackage, logging]),
    .target(
      name: "ImageFormats",
      dependencies: ["VDiskCore", "RemoteStore", logging]
        + formatNames.map { Target.Dependency.target(name: $0) }),

    // `FUSECeiling FILE MOUNTPOINT`: a minimal libfuse server over a raw file (bench.sh's
    // transport ceiling).
    .executableTarget(name: "FUSECeiling", dependencies: ["CFuse", "CLinux"]),

    // The workloads, shared by the ordo-one benchmarks and the callgrind executable.
    .target(name: "HotPathWorkloads", dependencies: ["VDiskCore", "ImageFormats", logging]),
    // `HotPathCallgrind IMAGE...`: one fixed, deterministic read workload (for callgrind).
    .executableTarget(name: "HotPathCallgrind", dependencies: ["HotPathWorkloads"]),
    .executableTarget(
      name: "HotPath",
      dependencies: ["HotPathWorkloads", "VDiskCore", .product(name: "Benchmark", package: "benchmark")],
      path: "Benchmarks/HotPath",
      plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
  ] + formatLibraries,
  swiftLanguageModes: [.v6]
)
