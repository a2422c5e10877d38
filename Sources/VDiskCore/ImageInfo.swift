/// A value in `vdiskfs info` output (rendered as human text or JSON by the CLI).
public indirect enum InfoValue: Sendable, Equatable {
  case string(String)
  case integer(Int64)
  case bool(Bool)
  case array([InfoValue])
  case object([InfoField])
}

/// One named value; an ordered list of these keeps output in a stable, meaningful order.
public struct InfoField: Sendable, Equatable {
  public var key: String
  public var value: InfoValue
  public init(_ key: String, _ value: InfoValue) {
    self.key = key
    self.value = value
  }
}

/// What `vdiskfs info` reports about one layer. Field names follow `qemu-img info --output=json`
/// where the two share a field.
public struct ImageInfo: Sendable, Equatable {
  /// `format`
  public var format: String
  /// `filename`
  public var filename: String
  /// `virtual-size`
  public var virtualSize: UInt64
  /// `cluster-size`
  public var clusterSize: UInt64?
  /// `backing-filename`: as the image records it.
  public var backingFilename: String?
  /// `full-backing-filename`: resolved against the image's directory.
  public var fullBackingFilename: String?
  /// `backing-filename-format`: as the image records it (nil when it does not).
  public var backingFormat: String?
  /// `dirty-flag`
  public var dirtyFlag: Bool?
  /// `format-specific.data` fields, in qemu's names where they exist.
  public var formatSpecific: [InfoField]

  public init(
    format: String, filename: String, virtualSize: UInt64, clusterSize: UInt64? = nil,
    backingFilename: String? = nil, fullBackingFilename: String? = nil, backingFormat: String? = nil,
    dirtyFlag: Bool? = nil, formatSpecific: [InfoField] = []
  ) {
    self.format = format
    self.filename = filename
    self.virtualSize = virtualSize
    self.clusterSize = clusterSize
    self.backingFilename = backingFilename
    self.fullBackingFilename = fullBackingFilename
    self.backingFormat = backingFormat
    self.dirtyFlag = dirtyFlag
    self.formatSpecific = formatSpecific
  }
}
