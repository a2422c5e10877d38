import Appliance
import ArgumentParser
import ImageFormats
import Logging
import QCOW2
import RemoteStore
import RemoteStores
import VDiskCore

/// `vdiskfs info IMAGE [--output human|json] [--backing-chain] [--backing-dir DIR] [-o OPTS]`: what the
/// image says about itself (and its internal snapshots), with qemu-img info's JSON field names.
/// With `--backing-chain`, every file a mount would open, each backing file by its resolved path.
struct InfoCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "info",
    abstract: "Show format, virtual size, cluster size, backing file, features and flags of an image.",
    discussion: """
      IMAGE may be a path, rbd:POOL[/NAMESPACE]/IMAGE[@SNAP], s3://BUCKET/KEY or an http(s) URL, \
      as for a mount. For an OVF appliance (.ova, .ovf, or a directory holding one): its disks \
      with their directory, file, capacity and format; with --backing-chain also each disk's own \
      image information; --format and --backing-dir do not apply to an appliance (exit 2).

      \(OpeningOptions.discussion)

      \(ExitCodes.helpText)
      """)

  enum Output: String, ExpressibleByArgument, CaseIterable {
    case human, json
  }

  @Argument(help: "The disk image.")
  var image: String

  @Option(help: "Output format: human or json (qemu-img info --output=json field names).")
  var output: Output = .human

  @Flag(help: "Show every image of the backing chain, top first, each by its resolved path.")
  var backingChain = false

  @Option(help: ArgumentHelp(FormatOption.help))
  var format: String?

  @Option(
    help: ArgumentHelp(
      "Every backing file and extent file must resolve inside this directory (like -o backing_dir).",
      valueName: "dir"))
  var backingDir: String?

  @Option(name: .customShort("o"), help: ArgumentHelp(OpeningOptions.help, valueName: "opts"))
  var openingOptions: [String] = []

  func run() throws {
    VDiskLogHandler.bootstrap(level: .warning)
    let logger = Logger(label: "vdiskfs")
    let opening = try OpeningOptionParser.parseForCommand(openingOptions, command: "info")
    opening.logWarnings(logger)
    var options = try opening.openOptions(format: format)
    options.openBacking = backingChain && !opening.noBacking
    if let backingDir { options.backingDirectory = backingDir }
    if !image.contains("://"), !image.hasPrefix("rbd:"), Appliance.recognizes(image) {
      try ApplianceOptions.check(image, options)
      return try ApplianceInfo.show(
        image,
        options: ApplianceInfo.Options(
          json: output == .json, backingChain: backingChain, cacheSize: options.cacheSize),
        logger: logger)
    }
    let chain: LayerChain
    do {
      chain = try ImageOpener.open(image, options: options, logger: logger)
    } catch let error as VDiskError {
      throw CLIFailure(code: ExitCodes.code(for: error), message: error.description)
    }
    let layers = backingChain ? chain.layers : [chain.top]
    var infos: [(info: ImageInfo, actualSize: UInt64, snapshots: [SnapshotRow])] = []
    for layer in layers {
      do {
        var info = layer.info
        // Where the backing file really is (symbolic links and `..` resolved), as opened.
        if let backing = layer.backing, info.backingFilename != nil {
          info.fullBackingFilename = backing.file.path
        }
        infos.append((info, diskUsage(of: layer), try Self.snapshotRows(of: layer)))
      } catch let error as VDiskError {
        throw CLIFailure(code: ExitCodes.code(for: error), message: error.description)
      }
    }
    // Show the top image by the name the user gave, like qemu-img does.
    infos[0].0.filename = image
    switch output {
    case .json:
      let objects = infos.map {
        InfoRendering.jsonObject($0.info, actualSize: $0.actualSize, snapshots: $0.snapshots)
      }
      let value: InfoValue = backingChain ? .array(objects) : objects[0]
      print(InfoRendering.json(value))
    case .human:
      print(
        infos.map { InfoRendering.human($0.info, actualSize: $0.actualSize, snapshots: $0.snapshots) }
          .joined(separator: "\n"), terminator: "")
    }
  }
  /// The internal snapshots of `layer` as qemu-img lists them (empty for formats without any).
  /// qcow2 layers are asked directly for the fields `SnapshotInfo` does not carry (icount).
  static func snapshotRows(of layer: any ImageLayer) throws -> [SnapshotRow] {
    if let qcow2 = layer as? QCOW2Layer {
      return try qcow2.snapshotTable().map {
        SnapshotRow(
          id: $0.id, name: $0.name, vmStateSize: $0.vmStateSize, dateSeconds: $0.dateSeconds,
          dateNanoseconds: $0.dateNanoseconds, vmClockNanoseconds: $0.vmClockNanoseconds, icount: $0.icount)
      }
    }
    guard let source = layer as? any SnapshotSource else { return [] }
    return try source.snapshots().map {
      SnapshotRow(
        id: $0.id, name: $0.name, vmStateSize: $0.vmStateSize, dateSeconds: $0.dateSeconds,
        dateNanoseconds: $0.dateNanoseconds, vmClockNanoseconds: $0.vmClockNanoseconds, icount: nil)
    }
  }
}
