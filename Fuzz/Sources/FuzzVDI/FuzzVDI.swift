import FuzzHarness
import VDI

/// One fuzz input as a vdi image (libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVDI(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.layer(FuzzHarness.bytes(data, size), driver: VDIDriver.self))
}
