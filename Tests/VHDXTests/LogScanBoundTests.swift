import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

@testable import VHDX

/// Bounded work for a hostile log: every sector of the log claiming to start an entry as long as
/// the log would cost sectors × log length of reads and checksums; the scan stops at its budget.
@Suite struct LogScanBoundTests {
  @Test func entryHeadersInEverySectorAreRefusedWithinTheBudget() throws {
    let scratch = try Scratch("vhdx-logscan")
    defer { scratch.remove() }
    let image = scratch.file("hostile.vhdx")
    try Qemu.create(image, format: "vhdx", size: "8M", options: ["block_size=1M", "log_size=1M"])
    let guid = GUID(0x1234_5678, 0x9ABC, 0xDEF0, [1, 2, 3, 4, 5, 6, 7, 8])
    try LogReplayTests.setLogGuid(image, guid)
    let header = try VHDXHeader.current(try ImageFile.open(image))
    let logLength = UInt64(header.logLength)
    #expect(logLength == 1 << 20)
    var log = [UInt8](repeating: 0, count: Int(logLength))
    for sector in stride(from: 0, to: log.count, by: 4096) {
      log.replaceSubrange(sector..<sector + 4, with: Array("loge".utf8))
      log.put(logLength, at: sector + 8, width: 4)
      log.put(guid, at: sector + 32)
    }
    try patch(image, at: header.logOffset, bytes: log)
    let started = Date()
    expectVDiskError(.corrupt, [image, "log's entry headers claim more than"]) {
      _ = try openChain(image)
    }
    // 36 MiB checked at most, not 256 sectors × 1 MiB.
    #expect(Date().timeIntervalSince(started) < 30)
    #expect(VHDXLog.scanBudget(logLength: logLength) == 36 << 20)
  }
}
