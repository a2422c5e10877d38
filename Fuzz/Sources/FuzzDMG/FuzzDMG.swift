import DMG
import FuzzHarness

/// One fuzz input as a DMG (UDIF) image (libFuzzer's entry point).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDMG(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  FuzzHarness.requireClear(FuzzHarness.layer(FuzzHarness.bytes(data, size), driver: DMGDriver.self))
}
