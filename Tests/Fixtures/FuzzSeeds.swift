import Foundation

/// Images that test code builds because qemu-img cannot (COWD, seSparse, stream-optimized with a
/// footer, VHD and VHDX differencing, qcow v1 geometries) become fuzz seeds: when
/// `VDISKFS_FUZZ_SEEDS` names a folder, `keep` copies each built image into `<folder>/<target>/`.
/// `scripts/fuzz.sh` runs the tests that build them with it set; in a plain test run it does
/// nothing.
public enum FuzzSeeds {
  public static func keep(_ path: String, target: String) {
    guard let folder = ProcessInfo.processInfo.environment["VDISKFS_FUZZ_SEEDS"], !folder.isEmpty else {
      return
    }
    let files = FileManager.default
    let into = folder + "/" + target
    try? files.createDirectory(atPath: into, withIntermediateDirectories: true)
    let name = (path as NSString).lastPathComponent
    try? files.copyItem(atPath: path, toPath: into + "/" + UUID().uuidString.prefix(8) + "-" + name)
  }
}
