import Cloop
import FuzzHarness

/// One fuzz input as a cloop image (libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCloop(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.layer(FuzzHarness.bytes(data, size), driver: CloopDriver.self))
}
