import Foundation
import FuzzHarness
import ImageFormats
import TestSupport
import Testing
import VDiskCore

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

  /// A file an input names is never opened from the host, even by an absolute path that exists:
  /// a qcow2 whose external data file is a real file is refused, not read through it.
  @Test func anInputNeverOpensAHostFile() throws {
    let scratch = try Scratch("fuzz-host-file")
    defer { scratch.remove() }
    let image = scratch.file("d.qcow2")
    let data = scratch.file("data.raw")
    _ = try Qemu.img("create", "-q", "-f", "qcow2", "-o", "data_file=\(data),data_file_raw=on", image, "1M")
    #expect(FileManager.default.fileExists(atPath: data))
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
    let qcow2 = try #require(FormatRegistry.standard.driver(named: "qcow2"))
    let error = try #require(FuzzHarness.layer(bytes, driver: qcow2) as? VDiskError)
    #expect(error.kind == .notFound)
    #expect("\(error)".contains("none is opened from the host"), "\(error)")
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
