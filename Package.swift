// swift-tools-version: 6.0
import Foundation
import PackageDescription

let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let systemPackage = Target.Dependency.product(name: "SystemPackage", package: "swift-system")

/// The formats: each is a target in Sources/Formats/NAME (with the C shims it needs), tested by
/// Tests/NAMETests, and one line in ImageFormats' `FormatRegistry.standard`. A new format is a
/// line here and a line there.
let formats: [(name: String, shims: [Target.Dependency])] = [
  ("QCOW2", ["CZlib", "CZstd"]),
  ("VMDK", ["CZlib"]),
  ("VHDX", []),
  ("VHD", []),
  ("VDI", []),
  ("QED", []),
  ("QCOW1", ["CZlib"]),
  ("Parallels", []),
  ("Cloop", ["CZlib"]),
  ("Bochs", []),
  ("DMG", ["CZlib", "CBzip2", "CLzma"]),
]
let formatTargets = formats.map { Target.Dependency.target(name: $0.name) }
let formatLibraries = formats.map {
  Target.target(
    name: $0.name, dependencies: ["VDiskCore"] + $0.shims + [logging], path: "Sources/Formats/\($0.name)")
}
let formatTests = formats.map {
  Target.testTarget(
    name: "\($0.name)Tests",
    dependencies: [.target(name: $0.name), "ImageFormats", "VDiskCore", "TestSupport"])
}

/// The remote stores images are opened from: each is a target in Sources/Stores/NAME (with the C
/// shims it needs) over the block cache of RemoteStore, and one line in ImageFormats'
/// `StoreRegistry.remote`.
let stores: [(name: String, folder: String, dependencies: [Target.Dependency])] = [
  ("RBDStore", "RBD", ["CRBD"]),
  ("HTTPStore", "HTTP", ["CCurl"]),
  ("S3Store", "S3", ["CCurl", "HTTPStore"]),
]
let storeTargets = stores.map { Target.Dependency.target(name: $0.name) }
let storeLibraries = stores.map {
  Target.target(
    name: $0.name, dependencies: ["VDiskCore", "RemoteStore", logging] + $0.dependencies,
    path: "Sources/Stores/\($0.folder)")
}

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
    // C is confined to CShims/: libfuse3, zlib/libdeflate, zstd, Linux constants, the build stamp.
    .target(
      name: "CFuse", path: "CShims/CFuse",
      cSettings: [.define("_FILE_OFFSET_BITS", to: "64"), .define("_GNU_SOURCE")],
      linkerSettings: [.linkedLibrary("fuse3")]),
    .target(
      name: "CZlib", path: "CShims/CZlib", linkerSettings: [.linkedLibrary("z"), .linkedLibrary("deflate")]),
    .target(name: "CZstd", path: "CShims/CZstd", linkerSettings: [.linkedLibrary("zstd")]),
    // libbz2 and liblzma for DMG's bzip2 and LZMA chunks.
    .target(name: "CBzip2", path: "CShims/CBzip2", linkerSettings: [.linkedLibrary("bz2")]),
    .target(name: "CLzma", path: "CShims/CLzma", linkerSettings: [.linkedLibrary("lzma")]),
    // libcurl for the HTTP(S) and S3 stores; wrappers for its variadic setopt/getinfo.
    .target(name: "CCurl", path: "CShims/CCurl", linkerSettings: [.linkedLibrary("curl")]),
    // librbd and librados for the RBD store.
    .target(
      name: "CRBD", path: "CShims/CRBD", linkerSettings: [.linkedLibrary("rbd"), .linkedLibrary("rados")]),
    // Linux constants (SEEK_DATA, F_OFD_*, FALLOC_FL_*, O_DIRECT) for VDiskCore's syscalls.
    .target(name: "CLinux", path: "CShims/CLinux", cSettings: [.define("_GNU_SOURCE")]),
    // The git commit the binary was built from (a string Swift cannot take from the command line).
    .target(
      name: "CBuildInfo", path: "CShims/CBuildInfo",
      cSettings: gitCommit.isEmpty ? [] : [.define("VDISKFS_GIT_COMMIT", to: "\"\(gitCommit)\"")]),

    // Format-agnostic engine: layers, extents, the one read and write loops, caches, errors. No
    // FUSE; C only for constants, in Syscalls.swift.
    .target(name: "VDiskCore", dependencies: ["CLinux", systemPackage, logging]),
    // One target per format: `formatLibraries`, added below.
    // What remote stores share: the object protocol, options, and the block cache that makes a
    // remote object a ByteSource. One target per store: `storeLibraries`, added below.
    .target(
      name: "RemoteStore", dependencies: ["VDiskCore", systemPackage, logging], path: "Sources/Stores/Remote"),
    // The format and store registries, probing by magic and opening whole backing chains.
    .target(name: "ImageFormats", dependencies: ["VDiskCore", "RemoteStore", logging] + formatTargets),
    // The list of stores the CLI serves (`StoreRegistry.standard`): one line per store.
    .target(
      name: "RemoteStores", dependencies: ["RemoteStore"] + storeTargets, path: "Sources/Stores/Registry"),
    // Partition tables (MBR, GPT) of a disk view: pure parsing.
    .target(name: "Partitions", dependencies: ["VDiskCore", logging]),
    // OVF appliances (.ova tar archives, .ovf directories): their disks opened in place.
    .target(name: "Appliance", dependencies: ["VDiskCore", "ImageFormats", logging]),
    // The FUSE adapter: knows no format.
    .target(name: "VDiskFUSE", dependencies: ["VDiskCore", "Partitions", "CFuse", "CLinux", logging]),
    // The CLI: parse, open, run.
    .executableTarget(
      name: "vdiskfs",
      dependencies: [
        "VDiskCore", "ImageFormats", "RemoteStore", "RemoteStores", "QCOW2", "VDiskFUSE", "CBuildInfo", "Appliance",
        argumentParser, logging,
      ]),

    // Test support: fixtures made at test time with qemu-img / qemu-io.
    .target(
      name: "TestSupport", dependencies: ["VDiskCore", "ImageFormats", systemPackage, logging],
      path: "Tests/Fixtures"),
    // The fuzz targets' harness (Fuzz/ links it too), and the replay of saved fuzz inputs.
    .target(
      name: "FuzzHarness", dependencies: ["VDiskCore", "Partitions", "ImageFormats", "Appliance", logging],
      path: "Tests/FuzzHarness"),
    .testTarget(
      name: "FuzzReplayTests", dependencies: ["FuzzHarness", "TestSupport", "ImageFormats", "VDiskCore"]),
    .testTarget(name: "VDiskCoreTests", dependencies: ["VDiskCore", "TestSupport"]),
    .testTarget(
      name: "RemoteStoreTests",
      dependencies: ["RemoteStore", "RemoteStores", "VDiskCore", "ImageFormats", "TestSupport"] + storeTargets
    ),
    // One test target per format: `formatTests`, added below.
    .testTarget(
      name: "ImageFormatsTests",
      dependencies: ["ImageFormats", "RemoteStore", "RemoteStores", "VDiskCore", "TestSupport"]
        + formatTargets),
    .testTarget(name: "VDiskFUSETests", dependencies: ["VDiskFUSE", "VDiskCore", "TestSupport"]),
    .testTarget(name: "vdiskfsTests", dependencies: ["VDiskCore", "ImageFormats", "TestSupport"]),
    .testTarget(name: "ApplianceTests", dependencies: ["Appliance", "VDiskCore", "ImageFormats", "TestSupport"]),
    .testTarget(
      name: "PartitionsTests", dependencies: ["Partitions", "VDiskCore", "ImageFormats", "TestSupport"]),
  ] + formatLibraries + formatTests + storeLibraries,
  swiftLanguageModes: [.v6]
)
