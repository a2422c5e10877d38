/// A read resolved to where its bytes are, so the FUSE layer can hand file ranges to the kernel
/// (splice) instead of copying them through a buffer: file ranges and zero runs, in order.
public enum ReadPiece: Sendable, Equatable {
  /// `length` bytes of `file` at `offset` (entirely below the file's end).
  case file(ImageFile, offset: UInt64, length: Int)
  case zeros(Int)

  public var length: Int {
    switch self {
    case .file(_, _, let length), .zeros(let length): length
    }
  }

  public static func == (a: ReadPiece, b: ReadPiece) -> Bool {
    switch (a, b) {
    case (.file(let f, let o, let l), .file(let g, let p, let m)): f === g && o == p && l == m
    case (.zeros(let l), .zeros(let m)): l == m
    default: false
    }
  }
}

extension LayerChain {
  /// The pieces of the `count` bytes at `offset` (clamped to the disk), merging host-contiguous
  /// ranges of one file and adjacent zero runs; nil when any byte needs decoding (compressed),
  /// lies past its file's end (read as zeros by `read`), or more than `maxPieces` pieces would
  /// be needed. Nil is never an error: the caller falls back to `read(into:at:)`.
  public func readPieces(at offset: UInt64, count: Int, maxPieces: Int) throws -> [ReadPiece]? {
    guard offset < virtualSize, count > 0 else { return [] }
    let total = Int(min(UInt64(count), virtualSize - offset))
    var pieces: [ReadPiece] = []
    pieces.reserveCapacity(4)
    var done = 0
    while done < total {
      let position = offset + UInt64(done)
      guard let (piece, length) = try Self.piece(layer: top, at: position, maxLength: UInt64(total - done))
      else { return nil }
      Self.append(piece, to: &pieces)
      if pieces.count > maxPieces { return nil }
      done += length
    }
    return pieces
  }

  /// Appends `piece`, merging it into the last one when contiguous.
  private static func append(_ piece: ReadPiece, to pieces: inout [ReadPiece]) {
    if let last = pieces.last {
      switch (last, piece) {
      case (.file(let f, let o, let l), .file(let g, let p, let m)) where f === g && o + UInt64(l) == p:
        pieces[pieces.count - 1] = .file(f, offset: o, length: l + m)
        return
      case (.zeros(let l), .zeros(let m)):
        pieces[pieces.count - 1] = .zeros(l + m)
        return
      default: break
      }
    }
    pieces.append(piece)
  }

  /// The first piece at `position` (resolving unallocated ranges through the backing chain) and
  /// its length; nil when it is compressed or past its file's end.
  private static func piece(layer: any ImageLayer, at position: UInt64, maxLength: UInt64) throws
    -> (ReadPiece, Int)?
  {
    guard position < layer.virtualSize else { return (.zeros(Int(maxLength)), Int(maxLength)) }
    let limit = min(maxLength, layer.virtualSize - position)
    let extent = try checked(layer.extent(at: position, maxLength: limit), layer: layer, at: position, limit)
    let length = Int(extent.length)
    switch extent.mapping {
    case .data(let host):
      let (end, overflow) = host.addingReportingOverflow(extent.length)
      guard !overflow, end <= extent.file.size else { return nil }
      return (.file(extent.file, offset: host, length: length), length)
    case .zero:
      return (.zeros(length), length)
    case .unallocated:
      guard let backing = layer.backing else { return (.zeros(length), length) }
      return try piece(layer: backing, at: position, maxLength: extent.length)
    case .compressed:
      return nil
    }
  }
}
