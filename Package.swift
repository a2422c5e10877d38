// swift-tools-version: 6.0
import Foundation
import PackageDescription

let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let systemPackage = Target.Dependency.product(name: "SystemPackage", package: "swift-system")

/// The git commit `vdiskfs --version` names: the Makefile exports VDISKFS_GIT_COMMIT; a plain
/// `swift build` builds too, and the version then says the commit is unknown. Only letters,
/// digits and '-' pass, so the define needs no quoting beyond its string quotes.
let gitCommit = (ProcessInfo.processInfo.environment["VDISKFS_GIT_COMMIT"] ?? "").filter {
  $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-")
}

let package = Package(
  name: "vdiskfs",
  products: [
    .executable(name: "vdiskfs", targets: ["vdiskfs"])
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
  ],
  targets: [
    // C is confined to CShims/: libfuse3's low-level API and zlib.
    .target(
      name: "CFuse", path: "CShims/CFuse",
      cSettings: [.define("_FILE_OFFSET_BITS", to: "64"), .define("_GNU_SOURCE")],
      linkerSettings: [.linkedLibrary("fuse3")]),
    .target(
      name: "CZlib", path: "CShims/CZlib", linkerSettings: [.linkedLibrary("z"), .linkedLibrary("deflate")]),
    .target(name: "CZstd", path: "CShims/CZstd", linkerSettings: [.linkedLibrary("zstd")]),
    // The git commit the binary was built from (a string Swift cannot take from the command line).
    .target(
      name: "CBuildInfo", path: "CShims/CBuildInfo",
      cSettings: gitCommit.isEmpty ? [] : [.define("VDISKFS_GIT_COMMIT", to: "\"\(gitCommit)\"")]),

    // Format-agnostic engine: layers, extents, the one read loop, caches, errors. No C, no FUSE.
    .target(name: "VDiskCore", dependencies: [systemPackage, logging]),
    // One target per format.
    .target(name: "QCOW2", dependencies: ["VDiskCore", "CZlib", "CZstd", logging], path: "Sources/Formats/QCOW2"),
    .target(name: "VMDK", dependencies: ["VDiskCore", "CZlib", logging], path: "Sources/Formats/VMDK"),
    .target(name: "VHDX", dependencies: ["VDiskCore", logging], path: "Sources/Formats/VHDX"),
    .target(name: "VHD", dependencies: ["VDiskCore", logging], path: "Sources/Formats/VHD"),
    .target(name: "VDI", dependencies: ["VDiskCore", logging], path: "Sources/Formats/VDI"),
    // Probing by magic and opening whole backing chains.
    .target(name: "ImageFormats", dependencies: ["VDiskCore", "QCOW2", "VMDK", "VHDX", "VHD", "VDI", logging]),
    // Partition tables (MBR, GPT) of a disk view: pure parsing.
    .target(name: "Partitions", dependencies: ["VDiskCore", logging]),
    // The FUSE adapter: knows no format.
    .target(name: "VDiskFUSE", dependencies: ["VDiskCore", "Partitions", "CFuse", logging]),
    // The CLI: parse, open, run.
    .executableTarget(
      name: "vdiskfs",
      dependencies: [
        "VDiskCore", "ImageFormats", "QCOW2", "VDiskFUSE", "CBuildInfo", argumentParser, logging,
      ]),

    // Test support: fixtures made at test time with qemu-img / qemu-io.
    .target(name: "TestSupport", dependencies: ["VDiskCore", "ImageFormats", logging], path: "Tests/Fixtures"),
    .testTarget(name: "VDiskCoreTests", dependencies: ["VDiskCore", "TestSupport"]),
    .testTarget(name: "QCOW2Tests", dependencies: ["QCOW2", "ImageFormats", "VDiskCore", "TestSupport"]),
    .testTarget(name: "VMDKTests", dependencies: ["VMDK", "ImageFormats", "VDiskCore", "TestSupport"]),
    .testTarget(name: "VHDXTests", dependencies: ["VHDX", "ImageFormats", "VDiskCore", "TestSupport"]),
    .testTarget(name: "VHDTests", dependencies: ["VHD", "ImageFormats", "VDiskCore", "TestSupport"]),
    .testTarget(name: "VDITests", dependencies: ["VDI", "ImageFormats", "VDiskCore", "TestSupport"]),
    .testTarget(name: "ImageFormatsTests", dependencies: ["ImageFormats", "QCOW2", "VDiskCore", "TestSupport"]),
    .testTarget(name: "VDiskFUSETests", dependencies: ["VDiskFUSE", "VDiskCore", "TestSupport"]),
    .testTarget(name: "vdiskfsTests", dependencies: ["VDiskCore", "TestSupport"]),
    .testTarget(
      name: "PartitionsTests", dependencies: ["Partitions", "VDiskCore", "ImageFormats", "TestSupport"]),
  ],
  swiftLanguageModes: [.v6]
)
