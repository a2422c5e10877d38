import FuzzHarness
import ImageFormats

/// One fuzz input as a raw disk whose MBR (with EBR chains) or GPT is read (libFuzzer's entry
/// point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPartitions(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.partitions(FuzzHarness.bytes(data, size)))
}
