import FuzzHarness

/// One fuzz input as an OVA appliance (`FuzzHarness.appliance`; libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOVA(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.appliance(FuzzHarness.bytes(data, size)))
}
