import FuzzHarness
import QCOW1

/// One fuzz input as a qcow version 1 image (libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzQCOW1(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.layer(FuzzHarness.bytes(data, size), driver: QCOW1Driver.self))
}
