import Testing
import VDiskCore

@Suite struct ByteReaderTests {
  let reader = ByteReader(
    [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09], path: "img", baseOffset: 0x100)

  @Test func decodesBothEndians() throws {
    #expect(try reader.u8(0) == 1)
    #expect(try reader.u16be(0) == 0x0102)
    #expect(try reader.u16le(0) == 0x0201)
    #expect(try reader.u32be(1) == 0x0203_0405)
    #expect(try reader.u32le(1) == 0x0504_0302)
    #expect(try reader.u64be(1) == 0x0203_0405_0607_0809)
    #expect(try reader.u64le(0) == 0x0807_0605_0403_0201)
    #expect(Array(try reader.bytes(7, count: 2)) == [8, 9])
  }

  @Test func refusesFieldsPastTheEnd() {
    for (offset, width) in [(2, 8), (9, 1), (-1, 1), (8, 2), (Int.max, 4)] {
      #expect(throws: VDiskError.self) {
        switch width {
        case 1: _ = try reader.u8(offset)
        case 2: _ = try reader.u16be(offset)
        case 4: _ = try reader.u32le(offset)
        default: _ = try reader.u64be(offset)
        }
      }
    }
    #expect(throws: VDiskError.self) { _ = try reader.bytes(5, count: 5) }
    #expect(throws: VDiskError.self) { _ = try reader.bytes(0, count: -1) }
  }

  @Test func errorNamesFileAndAbsoluteOffset() {
    do {
      _ = try reader.u32be(8, "l1_size")
      Issue.record("expected an error")
    } catch let e as VDiskError {
      #expect(e.kind == .corrupt)
      #expect(e.path == "img")
      #expect(e.offset == 0x108)
      #expect(e.description.contains("l1_size"))
      #expect(e.description.hasPrefix("img: "))
    } catch {
      Issue.record("unexpected error \(error)")
    }
  }
}
