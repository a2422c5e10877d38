import Appliance
import Logging
import VDiskCore

/// `vdiskfs info APPLIANCE`: the descriptor and, per disk, its directory, file, capacity and
/// format (the OVF's format URI and the format probed).
enum ApplianceInfo {
  static func show(_ path: String, json: Bool, logger: Logger) throws {
    do {
      let appliance = try Appliance(path: path, logger: logger)
      var rows: [(disk: ApplianceDisk, format: String, size: UInt64)] = []
      for disk in appliance.disks {
        let chain = try disk.open(logger: logger)
        rows.append((disk, chain.top.formatName, chain.virtualSize))
      }
      if json {
        let disks = rows.map { row in
          var fields = [
            InfoField("directory", .string("disks/" + row.disk.directoryName)),
            InfoField("file", .string(row.disk.href)), InfoField("disk-id", .string(row.disk.id)),
            InfoField("capacity", .integer(Int64(clamping: row.disk.capacity))),
            InfoField("virtual-size", .integer(Int64(clamping: row.size))),
            InfoField("format", .string(row.format)),
          ]
          if let uri = row.disk.formatURI { fields.append(InfoField("ovf-format", .string(uri))) }
          return InfoValue.object(fields)
        }
        print(
          InfoRendering.json(
            .object([
              InfoField("filename", .string(path)),
              InfoField("descriptor", .string(appliance.descriptorName)),
              InfoField("disks", .array(disks)),
            ])))
        return
      }
      print("appliance: \(path)")
      print("descriptor: \(appliance.descriptorName)")
      for row in rows {
        print("disk \(row.disk.index): disks/\(row.disk.directoryName)")
        print("  file: \(row.disk.href) (\(row.disk.file.size) bytes)")
        print("  capacity: \(row.disk.capacity) bytes")
        print("  format: \(row.format)" + (row.disk.formatURI.map { " (\($0))" } ?? ""))
      }
    } catch let error as VDiskError {
      throw CLIFailure(code: ExitCodes.code(for: error), message: error.description)
    }
  }
}
