import Appliance
import ImageFormats
import Logging
import VDiskCore

/// `vdiskfs info APPLIANCE`: the descriptor and, per disk, its directory, file, capacity and
/// format (the OVF's format URI and the format probed). Of `info`'s options, `--output` and
/// `cache_size` apply as for an image, `--backing-chain` shows each disk's own image information
/// (qemu-img info's fields, every layer: an appliance's disks stand alone, so one each), and
/// `--format` and `--backing-dir` are refused (`ApplianceOptions`).
enum ApplianceInfo {
  struct Options {
    var json = false
    var backingChain = false
    var cacheSize: Int?
  }

  static func show(_ path: String, options: Options, logger: Logger) throws {
    do {
      let appliance = try Appliance(path: path, logger: logger)
      var rows: [(disk: ApplianceDisk, chain: LayerChain)] = []
      for disk in appliance.disks {
        rows.append((disk, try disk.open(cacheSize: options.cacheSize, logger: logger)))
      }
      if options.json {
        let disks = rows.map { row in
          var fields = [
            InfoField("directory", .string("disks/" + row.disk.directoryName)),
            InfoField("file", .string(row.disk.href)), InfoField("disk-id", .string(row.disk.id)),
            InfoField("capacity", .integer(Int64(clamping: row.disk.capacity))),
            InfoField("virtual-size", .integer(Int64(clamping: row.chain.virtualSize))),
            InfoField("format", .string(row.chain.top.formatName)),
          ]
          if let uri = row.disk.formatURI { fields.append(InfoField("ovf-format", .string(uri))) }
          if options.backingChain {
            let layers = row.chain.layers.map {
              InfoRendering.jsonObject($0.info, actualSize: diskUsage(of: $0))
            }
            fields.append(InfoField("backing-chain", .array(layers)))
          }
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
        print("  format: \(row.chain.top.formatName)" + (row.disk.formatURI.map { " (\($0))" } ?? ""))
        guard options.backingChain else { continue }
        for layer in row.chain.layers {
          let text = InfoRendering.human(layer.info, actualSize: diskUsage(of: layer))
          print(
            text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map { "    " + $0 }
              .joined(separator: "\n"))
        }
      }
    } catch let error as VDiskError {
      throw CLIFailure(code: ExitCodes.code(for: error), message: error.description)
    }
  }
}

/// The image options a mount or `info` of an appliance cannot honour: the format (each disk's
/// is probed; the OVF's `ovf:format` is shown beside it) and a backing directory (an appliance's
/// disks may not name backing or extent files at all). Both are refused (exit 2) rather than
/// ignored.
enum ApplianceOptions {
  static func check(_ image: String, _ options: OpenOptions) throws {
    if options.format != nil {
      throw CLIFailure(
        code: ExitCodes.usage,
        message:
          "\(image) is an OVF appliance: --format / -o format does not apply (each disk's format is probed and shown with the OVF's ovf:format)"
      )
    }
    if options.backingDirectory != nil {
      throw CLIFailure(
        code: ExitCodes.usage,
        message:
          "\(image) is an OVF appliance: --backing-dir / -o backing_dir does not apply (a disk inside an appliance may not name backing or extent files; such disks are refused)"
      )
    }
  }
}
