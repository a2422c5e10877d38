/// A piece of a mapping run as a driver decodes it (a cluster, grain or sector range).
public protocol RunPiece: Equatable {
  /// The host offset when the piece is stored raw (runs continue while contiguous); nil otherwise.
  var rawHostOffset: UInt64? { get }
  /// Whether equal pieces of this kind merge into one run (zeros, unallocated); compressed units
  /// never do.
  var mergesWhenEqual: Bool { get }
}

/// Builds the longest run an `extent(at:maxLength:)` answer covers: pieces are appended while they
/// continue the run (the same kind, and for raw data, contiguous in the host file).
public struct RunAccumulator<Piece: RunPiece> {
  /// The run's first piece (its kind; for data, its host offset), nil while empty.
  public private(set) var first: Piece?
  /// Bytes covered so far.
  public private(set) var length: UInt64 = 0

  public init() {}

  /// Adds `piece` of `pieceLength` bytes; false, leaving the run as it was, when it does not
  /// continue the run.
  public mutating func extend(_ piece: Piece, _ pieceLength: UInt64) -> Bool {
    guard let head = first else {
      first = piece
      length = pieceLength
      return true
    }
    if let start = head.rawHostOffset {
      guard piece.rawHostOffset == start + length else { return false }
    } else {
      guard head.mergesWhenEqual, piece == head else { return false }
    }
    length += pieceLength
    return true
  }
}

extension Mapping: RunPiece {
  public var rawHostOffset: UInt64? {
    if case .data(let host) = self { return host }
    return nil
  }

  public var mergesWhenEqual: Bool { self == .zero || self == .unallocated }
}
