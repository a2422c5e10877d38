import Bochs
import FuzzHarness

/// One fuzz input as a Bochs image (libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBochs(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.layer(FuzzHarness.bytes(data, size), driver: BochsDriver.self))
}
