import FuzzHarness
import QED

/// One fuzz input as a QED image (libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzQED(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.layer(FuzzHarness.bytes(data, size), driver: QEDDriver.self))
}
