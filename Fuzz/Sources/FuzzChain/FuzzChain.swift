import FuzzHarness

/// One fuzz input as a two-layer chain of any formats, written through when its flag says so
/// (`FuzzHarness.chain`; libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzChain(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.chain(FuzzHarness.bytes(data, size)))
}
