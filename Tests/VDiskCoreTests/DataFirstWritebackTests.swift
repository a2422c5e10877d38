import SystemPackage
import TestSupport
import Testing
import VDiskCore

@Suite struct DataFirstWritebackTests {
  private func file() throws -> (ImageFile, FaultInjectingSource) {
    let source = FaultInjectingSource(wrapping: MemorySource([UInt8](repeating: 0, count: 8192)))
    return (try ImageFile(source: source, path: "test.img", isWritable: true), source)
  }

  @Test func dataSyncThenTablesThenSyncThenClean() throws {
    let (file, source) = try file()
    let writeback = DataFirstWriteback(file: file)
    var cleaned: [Int] = []
    try writeback.run(
      syncIfClean: true, take: { [512, 1024] },
      write: { offsets in
        #expect(source.stages.map(\.kind) == [.sync])
        for offset in offsets {
          try [UInt8]([1, 2, 3, 4]).withUnsafeBytes { try file.write($0, at: UInt64(offset)) }
        }
      },
      written: { offsets in
        #expect(source.stages.map(\.kind) == [.sync, .write, .write, .sync])
        cleaned = offsets
      })
    #expect(source.stages.map(\.kind) == [.sync, .write, .write, .sync])
    #expect(source.stages.filter { $0.kind == .write }.map(\.offset) == [512, 1024])
    #expect(cleaned == [512, 1024])
  }

  @Test func nothingDirtyIsOneSyncForAFlushAndNoneForRoom() throws {
    let (file, source) = try file()
    let writeback = DataFirstWriteback(file: file)
    var calls = 0
    try writeback.run(
      syncIfClean: false, take: { () -> Int? in nil }, write: { _ in calls += 1 },
      written: { _ in calls += 1 })
    #expect(source.stages.isEmpty)
    try writeback.run(
      syncIfClean: true, take: { () -> Int? in nil }, write: { _ in calls += 1 }, written: { _ in calls += 1 }
    )
    #expect(source.stages.map(\.kind) == [.sync])
    #expect(calls == 0)
  }

  @Test func aFailedStepLeavesTheTablesDirty() throws {
    // A failed data sync: no table is written.
    let (file, source) = try file()
    source.failSyncs(numbered: 1...1)
    var wrote = false
    var cleaned = false
    #expect(throws: VDiskError.self) {
      try DataFirstWriteback(file: file).run(
        syncIfClean: true, take: { 1 }, write: { _ in wrote = true }, written: { _ in cleaned = true })
    }
    #expect(!wrote && !cleaned)
    // A failed table write: nothing is marked clean.
    let (other, _) = try self.file()
    struct Refused: Error {}
    #expect(throws: Refused.self) {
      try DataFirstWriteback(file: other).run(
        syncIfClean: true, take: { 1 }, write: { _ in throw Refused() }, written: { _ in cleaned = true })
    }
    #expect(!cleaned)
  }
}
