import FuzzHarness
import VMDK

/// One fuzz input as a vmdk image (libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVMDK(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.layer(FuzzHarness.bytes(data, size), driver: VMDKDriver.self))
}
