import FuzzHarness
import VHD

/// One fuzz input as a vhd image (libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVHD(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.layer(FuzzHarness.bytes(data, size), driver: VHDDriver.self))
}
