import VDiskCore

/// `s3://BUCKET/KEY`, parsed and checked, and the URL of the object at an endpoint.
public struct S3Location: Sendable, Equatable {
  public var bucket: String
  public var key: String

  public static let prefix = "s3://"

  /// Throws `.invalidArgument` unless `location` is `s3://BUCKET/KEY` with a bucket of letters,
  /// digits, '.', '-' and '_' (at most 255) and a key of 1 to 1024 bytes without control
  /// characters.
  public init(_ location: String) throws {
    guard location.hasPrefix(Self.prefix) else {
      throw VDiskError(.invalidArgument, path: location, "is not an s3://BUCKET/KEY location")
    }
    let rest = location.dropFirst(Self.prefix.count)
    guard let slash = rest.firstIndex(of: "/") else {
      throw VDiskError(.invalidArgument, path: location, "names no object key (s3://BUCKET/KEY)")
    }
    let bucket = rest[..<slash]
    let key = rest[rest.index(after: slash)...]
    guard !bucket.isEmpty, bucket.utf8.count <= 255,
      bucket.utf8.allSatisfy({ Self.isUnreserved($0) && $0 != UInt8(ascii: "~") })
    else {
      throw VDiskError(.invalidArgument, path: location, "has an invalid bucket name '\(bucket)'")
    }
    guard !key.isEmpty, key.utf8.count <= 1024,
      key.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
    else {
      throw VDiskError(.invalidArgument, path: location, "has an invalid object key")
    }
    self.bucket = String(bucket)
    self.key = String(key)
  }

  /// The object's URL: path style (`ENDPOINT/BUCKET/KEY`) at a custom endpoint, or at AWS for a
  /// bucket with dots (its virtual host would not match AWS's certificate); virtual-host style
  /// (`https://BUCKET.s3.REGION.amazonaws.com/KEY`) at AWS otherwise.
  public func url(endpoint: String?, region: String) -> String {
    if let endpoint { return endpoint + "/" + bucket + "/" + Self.encode(key) }
    if bucket.contains(".") { return "https://s3.\(region).amazonaws.com/\(bucket)/\(Self.encode(key))" }
    return "https://\(bucket).s3.\(region).amazonaws.com/\(Self.encode(key))"
  }

  /// URI-encodes a key the way SigV4 wants it for S3: every byte but the unreserved ones
  /// (A-Z a-z 0-9 - . _ ~) and '/' as %XX with upper-case hex (AWS SigV4, "Create a canonical
  /// request": encode each path segment once, S3 keys are not normalized).
  public static func encode(_ key: String) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(key.utf8.count)
    for byte in key.utf8 {
      if isUnreserved(byte) || byte == UInt8(ascii: "/") {
        out.append(byte)
      } else {
        out += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
      }
    }
    return String(decoding: out, as: UTF8.self)
  }

  static func isUnreserved(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
      UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
      UInt8(ascii: "~"):
      true
    default: false
    }
  }
}
