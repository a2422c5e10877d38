import ImageFormats
import VDiskCore

extension FuzzHarness {
  /// Every fuzz target by name, as Fuzz/Sources names them: `Fuzz<Format>` for each format of
  /// the registry that has magic (its folder in Sources/Formats is its driver's type name
  /// without "Driver"), `FuzzPartitions`, `FuzzChain`, `FuzzVMDKDescriptor` and `FuzzOVA`; each returns the error that refused
  /// the input, if any. The regression replay of `make test` runs saved inputs through these, so
  /// an input meets the same code the fuzzer ran.
  public static let targets: [String: @Sendable ([UInt8]) -> (any Error)?] = {
    var targets: [String: @Sendable ([UInt8]) -> (any Error)?] = [
      "FuzzPartitions": { partitions($0) },
      "FuzzChain": { chain($0) },
      "FuzzVMDKDescriptor": { descriptor($0) },
      "FuzzOVA": { appliance($0) },
    ]
    for driver in FormatRegistry.standard.drivers where driver.name != RawDriver.name {
      let type = String(describing: driver)
      let name = "Fuzz" + (type.hasSuffix("Driver") ? String(type.dropLast("Driver".count)) : type)
      targets[name] = { layer($0, driver: driver) }
    }
    return targets
  }()
}
