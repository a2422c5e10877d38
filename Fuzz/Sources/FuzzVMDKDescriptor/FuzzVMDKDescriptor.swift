import FuzzHarness

/// One fuzz input as a VMDK text descriptor with the extents it names (`FuzzHarness.descriptor`;
/// libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVMDKDescriptor(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.descriptor(FuzzHarness.bytes(data, size)))
}
