import FuzzHarness
import VHDX

/// One fuzz input as a vhdx image (libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVHDX(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.layer(FuzzHarness.bytes(data, size), driver: VHDXDriver.self))
}
