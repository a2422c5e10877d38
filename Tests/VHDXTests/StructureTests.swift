import TestSupport
import Testing
import VDiskCore

@testable import VHDX

/// Parsers and helpers on their own.
@Suite struct StructureTests {
  @Test func crc32cKnownValues() {
    #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
    var s = [UInt8](repeating: 7, count: 64)
    s.seal()
    #expect(CRC32C.isValid(s))
    s[20] = 8
    #expect(!CRC32C.isValid(s))
  }

  @Test func guidLayout() throws {
    let g = try #require(GUID("{2DC27766-F623-4200-9D64-115E9BFD4A08}"))
    #expect(
      g.bytes == [
        0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08,
      ])
    #expect(g.description == "2DC27766-F623-4200-9D64-115E9BFD4A08")
    #expect(g == RegionTable.batGuid)
    #expect(GUID("2DC27766-F623-4200-9D64-115E9BFD4A0") == nil)
    #expect(GUID("2DC27766-F623-4200-9D64-115E9BFD4AXX") == nil)
  }

  @Test func windowsPrefixes() {
    #expect(ParentLocator.stripWindowsPrefix("C:/vms/a.vhdx") == "/vms/a.vhdx")
    #expect(ParentLocator.stripWindowsPrefix("//?/C:/vms/a.vhdx") == "/vms/a.vhdx")
    #expect(ParentLocator.stripWindowsPrefix("//?/Volume{x}/vms/a.vhdx") == "/vms/a.vhdx")
    #expect(ParentLocator.stripWindowsPrefix("./a.vhdx") == nil)
    #expect(ParentLocator.slashes("..\\a\\b.vhdx") == "../a/b.vhdx")
  }

  @Test func logSequenceNeedsTailAndConsecutiveNumbers() throws {
    func entry(_ position: UInt64, _ sequence: UInt64, tail: UInt64) -> LogEntry {
      LogEntry(
        position: position, length: 4096, tail: tail, sequenceNumber: sequence, flushedFileOffset: 0,
        lastFileOffset: 0, writes: [])
    }
    let log: UInt64 = 1 << 20
    // 0:7, 4096:8, 8192:9 (tail 0): one sequence of three.
    var valid: [UInt64: LogEntry] = [
      0: entry(0, 7, tail: 0), 4096: entry(4096, 8, tail: 0), 8192: entry(8192, 9, tail: 0),
    ]
    #expect(try VHDXLog.activeSequence(valid, logLength: log, path: "x")?.map(\.sequenceNumber) == [7, 8, 9])
    // A gap in the numbers: the head's tail cannot reach it; an older head can.
    valid[4096] = entry(4096, 20, tail: 4096)
    valid[8192] = entry(8192, 9, tail: 0)
    #expect(try VHDXLog.activeSequence(valid, logLength: log, path: "x")?.map(\.sequenceNumber) == [20])
    // Wrapping at the end of the log.
    let last = log - 4096
    valid = [last: entry(last, 3, tail: last), 0: entry(0, 4, tail: last)]
    #expect(try VHDXLog.activeSequence(valid, logLength: log, path: "x")?.map(\.sequenceNumber) == [3, 4])
    #expect(try VHDXLog.activeSequence([:], logLength: log, path: "x") == nil)
  }

  @Test func zeroRangesMerge() {
    let merged = VHDXLog.merge([0..<4096, 16384..<20480], 4096..<8192)
    #expect(merged == [0..<8192, 16384..<20480])
  }
}
