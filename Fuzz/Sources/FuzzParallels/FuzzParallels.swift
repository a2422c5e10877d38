import FuzzHarness
import Parallels

/// One fuzz input as a Parallels image (libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzParallels(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.layer(FuzzHarness.bytes(data, size), driver: ParallelsDriver.self))
}
