/// The bytes format probing looks at: the start of a file and its last sector (a fixed VHD keeps
/// its only footer there).
public struct ProbeBytes: Sendable {
  /// How much of the start of a file probing reads.
  public static let headLength = 4096
  /// How much of the end of a file probing reads.
  public static let tailLength = 512

  /// Up to the first `headLength` bytes.
  public var head: [UInt8]
  /// Up to the last `tailLength` bytes.
  public var tail: [UInt8]

  public init(head: [UInt8], tail: [UInt8]) {
    self.head = head
    self.tail = tail
  }

  public init(_ file: ImageFile) throws {
    var head = [UInt8](repeating: 0, count: Self.headLength)
    let n = try head.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
    head.removeLast(head.count - n)
    var tail = [UInt8](repeating: 0, count: Self.tailLength)
    let start = Self.tailStart(ofFileSized: file.size)
    let m = try tail.withUnsafeMutableBytes { try file.read(into: $0, at: start) }
    tail.removeLast(tail.count - m)
    self.init(head: head, tail: tail)
  }

  /// Where the tail starts in a file of `size` bytes.
  public static func tailStart(ofFileSized size: UInt64) -> UInt64 {
    size >= UInt64(tailLength) ? size - UInt64(tailLength) : 0
  }

  /// Whether `magic` appears at `offset` of the head.
  public func head(has magic: [UInt8], at offset: Int = 0) -> Bool {
    head.count >= offset + magic.count && Array(head[offset..<offset + magic.count]) == magic
  }

  /// Whether `magic` appears at `offset` of the tail.
  public func tail(has magic: [UInt8], at offset: Int = 0) -> Bool {
    tail.count >= offset + magic.count && Array(tail[offset..<offset + magic.count]) == magic
  }
}
