import FuzzHarness
import VHDX

/// One fuzz input as a vhdx image (libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVHDX(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.layer(data, size, driver: VHDXDriver.self)
}
