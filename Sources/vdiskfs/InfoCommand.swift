import ArgumentParser
import ImageFormats
import Logging
import VDiskCore

/// `vdiskfs info IMAGE [--output human|json] [--backing-chain]`: what the image says about
/// itself, with qemu-img info's JSON field names.
struct InfoCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "info",
    abstract: "Show format, virtual size, cluster size, backing file, features and flags of an image.",
    discussion: ExitCodes.helpText)

  enum Output: String, ExpressibleByArgument, CaseIterable {
    case human, json
  }

  @Argument(help: "The disk image.")
  var image: String

  @Option(help: "Output format: human or json (qemu-img info --output=json field names).")
  var output: Output = .human

  @Flag(help: "Show every image of the backing chain, top first.")
  var backingChain = false

  @Option(help: "Image format: qcow2, raw, vmdk, vhdx, vpc or vdi (default: probed).")
  var format: String?

  func run() throws {
    VDiskLogHandler.bootstrap(level: .warning)
    var options = OpenOptions()
    options.openBacking = backingChain
    if let name = format {
      guard let f = ImageFormat(rawValue: name.lowercased()) else {
        throw CLIFailure(code: ExitCodes.usage, message: "unknown format '\(name)'")
      }
      options.format = f
    }
    let chain: LayerChain
    do {
      chain = try ImageOpener.open(image, options: options, logger: Logger(label: "vdiskfs"))
    } catch let error as VDiskError {
      throw CLIFailure(code: ExitCodes.code(for: error), message: error.description)
    }
    let layers = backingChain ? chain.layers : [chain.top]
    var infos = layers.map { layer -> (ImageInfo, UInt64) in
      (layer.info, diskUsage(of: layer.file))
    }
    // Show the top image by the name the user gave, like qemu-img does.
    infos[0].0.filename = image
    switch output {
    case .json:
      let objects = infos.map { InfoRendering.jsonObject($0.0, actualSize: $0.1) }
      let value: InfoValue = backingChain ? .array(objects) : objects[0]
      print(InfoRendering.json(value))
    case .human:
      print(infos.map { InfoRendering.human($0.0, actualSize: $0.1) }.joined(separator: "\n"), terminator: "")
    }
  }
}
