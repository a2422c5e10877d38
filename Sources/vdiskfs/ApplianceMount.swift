import Appliance
import Logging
import VDiskCore
import VDiskFUSE

/// What a mount of an OVF appliance shows (read-only): the `.ovf` at the root and each disk
/// under `disks/<n>-<file>/` (`MountTree.appliance`).
struct ApplianceMount {
  var path: String
  var source: any TreeSource
  /// Whose owner and times the nodes show: the `.ova` or the `.ovf`.
  var owner: ImageFile
  var descriptorName: String
  /// The descriptor as a chain (what the mount names in its status lines).
  var descriptor: LayerChain

  init(_ path: String, cacheSize: Int? = nil, logger: Logger) throws {
    do {
      let appliance = try Appliance(path: path, logger: logger)
      var disks: [(name: String, chain: LayerChain)] = []
      for disk in appliance.disks {
        let chain = try disk.open(cacheSize: cacheSize, logger: logger)
        if chain.virtualSize != disk.capacity {
          logger.warning(
            "\(disk.file.path): the disk holds \(chain.virtualSize) bytes, the descriptor says \(disk.capacity)"
          )
        }
        disks.append((disk.directoryName, chain))
      }
      self.path = path
      descriptorName = appliance.descriptorName
      descriptor = try appliance.descriptorChain(logger: logger)
      owner = (appliance.descriptorFile.source as? WindowSource)?.parent ?? appliance.descriptorFile
      source = MountTree.appliance(disks: disks, files: [(descriptorName, descriptor)], logger: logger)
    } catch let error as VDiskError {
      throw CLIFailure(code: ExitCodes.code(for: error), message: error.description)
    }
  }
}
