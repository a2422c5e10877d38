import Testing
import VDiskCore

@Suite struct RunAccumulatorTests {
  @Test func mergesEqualZerosAndUnallocatedAndContiguousData() {
    var zeros = RunAccumulator<Mapping>()
    let zeroAnswers = [
      zeros.extend(.zero, 10), zeros.extend(.zero, 5), zeros.extend(.unallocated, 1),
      zeros.extend(.data(hostOffset: 0), 1),
    ]
    #expect(zeroAnswers == [true, true, false, false])
    #expect(zeros.length == 15 && zeros.first == .zero)

    var data = RunAccumulator<Mapping>()
    let dataAnswers = [
      data.extend(.data(hostOffset: 100), 10), data.extend(.data(hostOffset: 110), 20),
      data.extend(.data(hostOffset: 131), 1),  // not contiguous
      data.extend(.zero, 1),
    ]
    #expect(dataAnswers == [true, true, false, false])
    #expect(data.length == 30 && data.first == .data(hostOffset: 100))
  }

  @Test func compressedUnitsNeverMerge() {
    let unit = CompressedDescriptor(
      hostOffset: 7, compressedLength: 10, guestOffset: 0, decompressedLength: 512)
    var run = RunAccumulator<Mapping>()
    let answers = [run.extend(.compressed(unit), 512), run.extend(.compressed(unit), 512)]
    #expect(answers == [true, false])
    #expect(run.length == 512)
  }
}
