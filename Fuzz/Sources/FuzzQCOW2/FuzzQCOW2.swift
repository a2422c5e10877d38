import FuzzHarness
import QCOW2

/// One fuzz input as a qcow2 image (libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzQCOW2(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.layer(FuzzHarness.bytes(data, size), driver: QCOW2Driver.self))
}
