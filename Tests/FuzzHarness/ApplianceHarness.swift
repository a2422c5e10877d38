import Appliance
import ImageFormats
import VDiskCore

extension FuzzHarness {
  /// One input as an `.ova`: its tar index, its OVF descriptor, and every disk it names opened
  /// in place (probed) and walked.
  @discardableResult
  public static func appliance(_ bytes: [UInt8]) -> (any Error)? {
    do {
      let ova = try Appliance(archive: try file(bytes, path: "/nonexistent/fuzz.ova"), logger: logger)
      for disk in ova.disks { try walk(try disk.open(logger: logger)) }
      if let manifest = try ova.manifest() { _ = try ova.verify(manifest) }
      return nil
    } catch {
      return error
    }
  }
}
