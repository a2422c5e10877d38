import Foundation
import FuzzHarness
import Testing

/// Replays every saved fuzz input (Tests/FuzzRegressions/<target>/<input>) through its target,
/// with the same harness the fuzzer runs (`FuzzHarness.targets`). Saved are the inputs a fuzz run
/// found (a crash, hang or out-of-memory, kept after its fix; none so far) and cut seeds that end
/// in a refusal deep in a parser. Each must now either open, or be refused with one `VDiskError`
/// that names the image and the fault; a crash or a trap of the write oracle fails the whole run.
/// `make sanitize` replays them under the sanitizers too.
@Suite struct FuzzReplayTests {
  static let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  static let regressions = tests.appendingPathComponent("FuzzRegressions")

  /// (target, input file name) of every saved input.
  static let inputs: [(String, String)] = {
    let files = FileManager.default
    let targets = (try? files.contentsOfDirectory(atPath: regressions.path)) ?? []
    return targets.sorted().flatMap { target in
      let names =
        (try? files.contentsOfDirectory(atPath: regressions.appendingPathComponent(target).path)) ?? []
      return names.filter { !$0.hasPrefix(".") }.sorted().map { (target, $0) }
    }
  }()

  @Test func theHarnessKnowsEveryTargetOfTheFuzzPackage() throws {
    let sources = Self.tests.deletingLastPathComponent().appendingPathComponent("Fuzz/Sources")
    let folders = try FileManager.default.contentsOfDirectory(atPath: sources.path)
      .filter { $0.hasPrefix("Fuzz") && $0 != "FuzzHarness" }
    #expect(Set(folders) == Set(FuzzHarness.targets.keys))
    #expect(folders.count >= 7)
  }

  @Test func everySavedInputNamesATarget() throws {
    #expect(!Self.inputs.isEmpty)
    for (target, name) in Self.inputs {
      #expect(FuzzHarness.targets[target] != nil, "\(target)/\(name): no fuzz target \(target)")
    }
  }

  @Test(arguments: inputs.map { "\($0.0)/\($0.1)" })
  func savedInputIsOpenedOrRefusedWithOneClearError(_ input: String) throws {
    let (target, _) = try #require(Self.inputs.first { "\($0.0)/\($0.1)" == input })
    let run = try #require(FuzzHarness.targets[target])
    let bytes = [UInt8](try Data(contentsOf: Self.regressions.appendingPathComponent(input)))
    let why = FuzzHarness.unclear(run(bytes))
    #expect(why == nil, "\(input): \(why ?? "")")
  }
}
