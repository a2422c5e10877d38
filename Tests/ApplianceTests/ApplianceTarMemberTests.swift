import Appliance
import Foundation
import TestSupport
import Testing
import VDiskCore

/// Tar members that are not plain files: a hard link to an earlier member reads as that member;
/// a disk the OVF names that is a GNU sparse file, a symbolic link, a directory, a FIFO or a hard
/// link to nothing earlier is refused naming the archive, the member and its type.
@Suite struct ApplianceTarMemberTests {
  /// A raw disk of `size` bytes with a pattern per 4 KiB, so misplaced windows show.
  static func rawDisk(_ path: String, size: Int, seed: UInt8) throws -> [UInt8] {
    let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 / 4096 &* 7 &+ $0 % 251) ^ seed }
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return bytes
  }

  static func read(_ disk: ApplianceDisk) throws -> [UInt8] {
    try readAll(try disk.open(logger: testLogger))
  }

  /// Builds `ova` with Python's tarfile from `entries` (name, kind, value: a file's path for
  /// "file", the link's target for "link"/"symlink"), in order.
  static func pythonTar(_ ova: String, format: String = "ustar", _ entries: [(String, String, String)]) throws
  {
    let script = """
      import sys, tarfile
      out, fmt, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
      fmts = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}
      with tarfile.open(out, "w", format=fmts[fmt]) as tar:
          for i in range(0, len(rest), 3):
              name, kind, value = rest[i:i + 3]
              if kind == "file":
                  info = tar.gettarinfo(value, arcname=name)
                  with open(value, "rb") as f:
                      tar.addfile(info, f)
                  continue
              info = tarfile.TarInfo(name)
              info.type = {"link": tarfile.LNKTYPE, "symlink": tarfile.SYMTYPE,
                           "dir": tarfile.DIRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
              if kind in ("link", "symlink"):
                  info.linkname = value
              tar.addfile(info)
      """
    try run("python3", ["-c", script, ova, format] + entries.flatMap { [$0.0, $0.1, $0.2] })
  }

  /// GNU tar stores a second name of a file as a hard link ('1'); an OVF naming the link reads
  /// the first member's bytes, in every tar format, and the manifest verifies through the link.
  @Test func hardLinkToAnEarlierMemberReadsAsIt() throws {
    let scratch = try Scratch("ova-hardlink")
    defer { scratch.remove() }
    let source = try ApplianceFixture.disk("disk.vmdk", size: 8 << 20, seed: 11, in: scratch)
    try run("ln", [source.vmdk, scratch.file("copy.vmdk")])
    let size = try ApplianceFixture.fileSize(source.vmdk)
    try ApplianceFixture.ovf([("copy.vmdk", size, source.size), ("disk.vmdk", size, source.size)])
      .write(toFile: scratch.file("app.ovf"), atomically: true, encoding: .utf8)
    for format in ["ustar", "gnu", "pax"] {
      let ova = scratch.file("app-\(format).ova")
      try ApplianceFixture.tar(
        ova, directory: scratch.path, members: ["app.ovf", "disk.vmdk", "copy.vmdk"], format: format)
      let members = try TarIndex.read(try ImageFile.open(ova))
      #expect(members.map(\.kind).contains(.hardLink(target: "disk.vmdk")), "\(format): \(members)")
      let appliance = try Appliance(path: ova, logger: testLogger)
      #expect(appliance.disks.map(\.directoryName) == ["1-copy.vmdk", "2-disk.vmdk"], "\(format)")
      #expect(try ApplianceFixture.disksMatch(appliance, [source, source]), "\(format)")
      #expect(try appliance.verify(try #require(try appliance.manifest())).isEmpty, "\(format)")
    }
  }

  /// Hard links resolve only to earlier members: one to a later member, to a missing one or to
  /// a symbolic link is refused; a chain of links to one earlier file reads.
  @Test func hardLinksThatResolveAndThoseThatDoNot() throws {
    let scratch = try Scratch("ova-links")
    defer { scratch.remove() }
    let bytes = try Self.rawDisk(scratch.file("d.img"), size: 64 << 10, seed: 3)
    func appliance(naming href: String, _ entries: [(String, String, String)]) throws -> Appliance {
      let ovf = scratch.file("x.ovf")
      try ApplianceFixture.ovf([(href, UInt64(bytes.count), UInt64(bytes.count))])
        .write(toFile: ovf, atomically: true, encoding: .utf8)
      let ova = scratch.file("\(UUID().uuidString.prefix(8)).ova")
      try Self.pythonTar(ova, [("x.ovf", "file", ovf)] + entries)
      return try Appliance(path: ova, logger: testLogger)
    }
    // link → link → file, all earlier: reads the file.
    let chained = try appliance(
      naming: "c.img",
      [("d.img", "file", scratch.file("d.img")), ("b.img", "link", "d.img"), ("c.img", "link", "./b.img")])
    #expect(try Self.read(chained.disks[0]) == bytes)
    // A link to a member that comes later, to nothing, to a symbolic link.
    let refusals: [(String, [(String, String, String)], String)] = [
      ("a.img", [("a.img", "link", "d.img"), ("d.img", "file", scratch.file("d.img"))], "to \"d.img\""),
      ("a.img", [("a.img", "link", "nowhere.img")], "to \"nowhere.img\""),
      ("a.img", [("s.img", "symlink", "d.img"), ("a.img", "link", "s.img")], "to \"s.img\""),
    ]
    for (href, entries, target) in refusals {
      do {
        _ = try appliance(naming: href, entries)
        Issue.record("accepted a hard link \(target)")
      } catch let error as VDiskError {
        #expect(error.kind == .unsupported, "\(error)")
        #expect(error.path.hasSuffix(".ova"), "\(error)")
        #expect(
          error.description.contains("member \"a.img\" is a hard link (type '1') \(target)"), "\(error)")
      }
    }
  }

  /// A disk that is a symbolic link, a directory or a FIFO: one error naming the archive, the
  /// member and its type. Members of those types the OVF does not name are ignored.
  @Test func otherMemberTypesAreRefusedWhenNamed() throws {
    let scratch = try Scratch("ova-types")
    defer { scratch.remove() }
    let bytes = try Self.rawDisk(scratch.file("d.img"), size: 64 << 10, seed: 5)
    let ovf = scratch.file("x.ovf")
    // (tarfile, as tar does, stores a directory's name with a trailing slash.)
    let cases: [(String, String, String)] = [
      ("symlink", "d.img", "n.img\" is a symbolic link (type '2') to \"d.img\""),
      ("dir", "", "n.img/\" is a directory (type '5')"), ("fifo", "", "n.img\" is a FIFO (type '6')"),
    ]
    for (kind, value, words) in cases {
      try ApplianceFixture.ovf([("n.img", UInt64(bytes.count), UInt64(bytes.count))])
        .write(toFile: ovf, atomically: true, encoding: .utf8)
      let ova = scratch.file("\(kind).ova")
      try Self.pythonTar(
        ova, format: "pax",
        [("x.ovf", "file", ovf), ("d.img", "file", scratch.file("d.img")), ("n.img", kind, value)])
      do {
        _ = try Appliance(path: ova, logger: testLogger)
        Issue.record("accepted a \(kind)")
      } catch let error as VDiskError {
        #expect(error.description.hasPrefix(ova + ": member \"\(words)"), "\(error)")
      }
      // The same archive with the OVF naming the regular member: the odd one is ignored.
      try ApplianceFixture.ovf([("d.img", UInt64(bytes.count), UInt64(bytes.count))])
        .write(toFile: ovf, atomically: true, encoding: .utf8)
      try Self.pythonTar(
        ova, format: "pax",
        [("x.ovf", "file", ovf), ("n.img", kind, value), ("d.img", "file", scratch.file("d.img"))])
      #expect(try Self.read(try Appliance(path: ova, logger: testLogger).disks[0]) == bytes, "\(kind)")
    }
  }

  /// GNU tar's sparse members (`tar -S`): old GNU 'S' headers with extension headers, and pax
  /// GNU.sparse 1.0. Named by the OVF they are refused (the archive holds the data without its
  /// holes); the members after them are found where they are.
  @Test func gnuSparseMembersAreRefusedAndSteppedOver() throws {
    let scratch = try Scratch("ova-sparse")
    defer { scratch.remove() }
    let directory = try scratch.directory("app")
    // Eight data runs (more than the four an old GNU header holds: one extension header).
    let sparse = directory + "/sparse.img"
    try run("truncate", ["-s", "8M", sparse])
    for i in 0..<8 {
      try sh("printf 'run%d' \(i) | dd of=\(sparse) bs=1 seek=\(i << 20) conv=notrunc status=none")
    }
    let after = try Self.rawDisk(directory + "/after.img", size: 96 << 10, seed: 9)
    for format in ["gnu", "pax"] {
      for (href, size) in [("sparse.img", UInt64(8 << 20)), ("after.img", UInt64(after.count))] {
        try ApplianceFixture.ovf([(href, size, size)])
          .write(toFile: directory + "/x.ovf", atomically: true, encoding: .utf8)
        let ova = scratch.file("\(format)-\(href).ova")
        try run(
          "tar",
          ["-S", "--format=\(format)", "-C", directory, "-cf", ova, "x.ovf", "sparse.img", "after.img"])
        let members = try TarIndex.read(try ImageFile.open(ova))
        #expect(members.map(\.name) == ["x.ovf", "sparse.img", "after.img"], "\(format): \(members)")
        #expect(members.map(\.kind) == [.regular, .gnuSparse, .regular], "\(format)")
        if href == "after.img" {
          #expect(try Self.read(try Appliance(path: ova, logger: testLogger).disks[0]) == after, "\(format)")
          continue
        }
        do {
          _ = try Appliance(path: ova, logger: testLogger)
          Issue.record("accepted a sparse member (\(format))")
        } catch let error as VDiskError {
          #expect(error.kind == .unsupported)
          #expect(
            error.description.hasPrefix(ova + ": member \"sparse.img\" is a GNU sparse file"), "\(error)")
        }
      }
    }
  }
}
