import ArgumentParser
import ImageFormats
import Logging
import QCOW2
import RemoteStore
import RemoteStores
import VDiskCore

/// `vdiskfs map IMAGE [--output human|json] [--snapshot NAME] [--format F] [-o OPTS]`: where the guest
/// disk's bytes live through the backing chain, printed exactly as `qemu-img map` prints it.
struct MapCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "map",
    abstract: "Show where the guest disk's bytes live through the backing chain (like qemu-img map).",
    discussion: """
      IMAGE may be a path, rbd:POOL[/NAMESPACE]/IMAGE[@SNAP], s3://BUCKET/KEY or an http(s) URL, \
      as for a mount.

      \(OpeningOptions.discussion)

      \(ExitCodes.helpText)
      """)

  @Argument(help: "The disk image.")
  var image: String

  @Option(help: "Output format: human or json (qemu-img map --output=json fields).")
  var output: InfoCommand.Output = .human

  @Option(help: "Map the internal snapshot with this name (or, when no name matches, this ID).")
  var snapshot: String?

  @Option(help: ArgumentHelp(FormatOption.help))
  var format: String?

  @Option(
    help: ArgumentHelp(
      "Every backing file and extent file must resolve inside this directory (like -o backing_dir).",
      valueName: "dir"))
  var backingDir: String?

  @Flag(help: "Map the top image alone (like -o nobacking): what it does not hold is unallocated.")
  var noBacking = false

  @Option(name: .customShort("o"), help: ArgumentHelp(OpeningOptions.help, valueName: "opts"))
  var openingOptions: [String] = []

  func run() throws {
    VDiskLogHandler.bootstrap(level: .warning)
    let logger = Logger(label: "vdiskfs")
    let opening = try OpeningOptionParser.parseForCommand(openingOptions, command: "map")
    opening.logWarnings(logger)
    var options = try opening.openOptions(format: format)
    if let backingDir { options.backingDirectory = backingDir }
    options.openBacking = !noBacking && !opening.noBacking
    do {
      let chain = try ImageOpener.open(image, options: options, logger: logger)
      let entries = try MapEntry.entries(of: snapshot.map { try Self.snapshotChain(chain, $0) } ?? chain)
      switch output {
      case .json:
        print(MapEntry.json(entries))
      case .human:
        try MapEntry.printHuman(entries, names: Self.shownNames(chain, image: image))
      }
    } catch let error as VDiskError {
      throw CLIFailure(code: ExitCodes.code(for: error), message: error.description)
    }
  }

  /// File names as qemu-img shows them: the top image as the user named it, an external data
  /// file as its image records it; other files by their resolved paths.
  static func shownNames(_ chain: LayerChain, image: String) -> [String: String] {
    var names: [String: String] = [:]
    for layer in chain.layers {
      if let qcow2 = layer as? QCOW2Layer, let data = qcow2.dataFile,
        let recorded = qcow2.header.externalDataFileName
      {
        names[data.path] = recorded
      }
    }
    names[chain.top.file.path] = image
    return names
  }

  /// The chain seen from snapshot `nameOrID` of the top layer: by name first, else by ID.
  static func snapshotChain(_ chain: LayerChain, _ nameOrID: String) throws -> LayerChain {
    guard let source = chain.top as? any SnapshotSource else {
      throw VDiskError.unsupported(
        chain.top.file.path, "\(chain.top.formatName) images have no internal snapshots")
    }
    let list = try source.snapshots()
    guard let found = list.first(where: { $0.name == nameOrID }) ?? list.first(where: { $0.id == nameOrID })
    else {
      throw VDiskError(
        .notFound, path: chain.top.file.path, "no snapshot named \"\(nameOrID)\" or with that ID")
    }
    return LayerChain(top: try source.snapshotLayer(id: found.id))
  }
}

/// One entry of `qemu-img map`: a run of guest bytes and where it lives. Built from the chain's
/// status (`LayerChain.status`) the way QEMU's `get_block_status` builds its `MapEntry`, and
/// merged by QEMU's `entry_mergeable` rule.
struct MapEntry: Equatable {
  var start: UInt64
  var length: UInt64
  /// The layer that answered (0 = top).
  var depth: Int
  /// Allocated in that layer (QEMU's BDRV_BLOCK_ALLOCATED): data or zeros it stores itself.
  var present: Bool
  var zero: Bool
  var data: Bool
  /// Host offset, when QEMU knows one (BDRV_BLOCK_OFFSET_VALID): raw data, a raw file's holes,
  /// and qcow2 clusters that keep a host cluster while reading as zeros or as unallocated.
  var offset: UInt64?
  /// The file `offset` lies in (merging and human output only).
  var filename: String?

  /// qemu-img's `entry_mergeable`: same flags, depth and file, and host offsets (if any) that
  /// continue each other.
  func canAbsorb(_ next: MapEntry) -> Bool {
    guard length > 0, zero == next.zero, data == next.data, depth == next.depth, present == next.present,
      filename == next.filename, (offset == nil) == (next.offset == nil)
    else { return false }
    guard let offset else { return true }
    return offset + length == next.offset
  }

  /// The whole disk of `chain`, merged as qemu-img merges. An empty disk gives one entry of
  /// length 0, as qemu-img prints it.
  static func entries(of chain: LayerChain) throws -> [MapEntry] {
    let layers = chain.layers
    let size = chain.virtualSize
    var result: [MapEntry] = []
    var position: UInt64 = 0
    while position < size {
      let status = try chain.status(at: position, maxLength: size - position)
      for piece in try pieces(of: status, layers: layers) {
        if let last = result.last, last.canAbsorb(piece) {
          result[result.count - 1].length += piece.length
        } else {
          result.append(piece)
        }
      }
      position += status.length
    }
    if result.isEmpty {
      result.append(MapEntry(start: 0, length: 0, depth: 0, present: false, zero: false, data: false))
    }
    return result
  }

  /// The entries for one chain extent: one, or (for qcow2 runs without data) one per run of
  /// clusters with the same kept host cluster.
  static func pieces(of s: ChainExtent, layers: [any ImageLayer]) throws -> [MapEntry] {
    switch s.kind {
    case .data:
      let offset = s.compressed ? nil : s.hostOffset
      return [
        MapEntry(
          start: s.offset, length: s.length, depth: s.depth, present: true, zero: false, data: true,
          offset: offset,
          filename: offset == nil ? nil : s.filePath)
      ]
    case .zero:
      return try kept(s, layer: layers[s.depth], depth: s.depth, present: true)
    case .unallocated:
      // Past the end of a shorter backing layer QEMU stops at the layer above it (which reads
      // as zeros there); at the bottom of the chain, at the bottom layer.
      var depth = s.depth
      if depth > 0, s.offset >= layers[depth].virtualSize { depth -= 1 }
      return try kept(s, layer: layers[depth], depth: depth, present: false)
    }
  }

  /// Zeros (present or not) at `depth`, with the host offsets QEMU reports for them: a raw
  /// file's own offsets, or the host clusters qcow2 L2 entries keep.
  static func kept(_ s: ChainExtent, layer: any ImageLayer, depth: Int, present: Bool) throws -> [MapEntry] {
    func entry(_ start: UInt64, _ length: UInt64, _ offset: UInt64?) -> MapEntry {
      MapEntry(
        start: start, length: length, depth: depth, present: present, zero: true, data: false, offset: offset,
        filename: offset == nil ? nil : layer.file.path)
    }
    if layer is RawLayer { return [entry(s.offset, s.length, s.offset)] }
    guard let qcow2 = layer as? any QCOW2KeptClusters, s.offset < layer.virtualSize else {
      return [entry(s.offset, s.length, nil)]
    }
    var pieces: [MapEntry] = []
    let end = min(s.offset + s.length, layer.virtualSize)
    var position = s.offset
    while position < end {
      let (length, host) = try qcow2.keptHostOffset(at: position, maxLength: end - position)
      let piece = entry(position, max(1, min(length, end - position)), host)
      if let last = pieces.last, last.canAbsorb(piece) {
        pieces[pieces.count - 1].length += piece.length
      } else {
        pieces.append(piece)
      }
      position += piece.length
    }
    if end < s.offset + s.length { pieces.append(entry(end, s.offset + s.length - end, nil)) }
    return pieces
  }

  /// `qemu-img map --output=json`, byte for byte.
  static func json(_ entries: [MapEntry]) -> String {
    let lines = entries.map { e in
      var line =
        "{ \"start\": \(e.start), \"length\": \(e.length), \"depth\": \(e.depth), \"present\": \(e.present),"
        + " \"zero\": \(e.zero), \"data\": \(e.data)"
      if let offset = e.offset { line += ", \"offset\": \(offset)" }
      return line + "}"
    }
    return "[" + lines.joined(separator: ",\n") + "]"
  }

  /// `qemu-img map` (human): the runs stored as data, with where they are mapped to. Like
  /// qemu-img, stops with an error at data that has no host offset (compressed clusters).
  static func printHuman(_ entries: [MapEntry], names: [String: String]) throws {
    func column(_ value: UInt64) -> String {
      let text = value == 0 ? "0" : "0x" + String(value, radix: 16)
      return text + String(repeating: " ", count: max(0, 16 - text.count))
    }
    print("Offset          Length          Mapped to       File")
    for e in entries where e.data {
      guard let offset = e.offset else {
        throw CLIFailure(
          code: ExitCodes.failure, message: "File contains external, encrypted or compressed clusters.")
      }
      guard !e.zero else { continue }
      let file = e.filename.map { names[$0] ?? $0 } ?? ""
      print(column(e.start) + column(e.length) + column(offset) + file)
    }
  }
}
