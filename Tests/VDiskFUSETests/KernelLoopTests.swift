import CFuse
import Glibc
import Logging
import TestSupport
import Testing
import VDiskCore

@testable import VDiskFUSE

/// The request loop's pieces that the real kernel cannot reach: INIT negotiation against kernels
/// other than this one, and the dispatch of requests the kernel does not send here (unknown
/// opcodes, malformed lengths). Replies are read back from a pipe standing in for /dev/fuse.
@Suite("Request loop")
struct KernelLoopTests {
  /// What a 6.18 kernel offered (libfuse's `-d` trace): 7.45, flags 0x73fffffb, flags2 0.
  func offer(minor: UInt32, flags: UInt32 = 0x73ff_fffb, flags2: UInt32 = 0, major: UInt32 = 7)
    -> fuse_init_in
  {
    var request = fuse_init_in()
    request.major = major
    request.minor = minor
    request.max_readahead = 128 << 10
    request.flags = flags
    request.flags2 = flags2
    return request
  }

  @Test func initAnswersTheFlagsLibfuseNegotiated() throws {
    let rw = try InitNegotiation.reply(to: offer(minor: 45), settings: .init(asyncDirectIO: false)).get()
    #expect(rw.major == 7 && rw.minor == 42)
    #expect(rw.flags == 0x4040_1029 && rw.flags2 == 0)
    #expect(rw.max_write == 1 << 20 && rw.max_pages == 256 && rw.time_gran == 1)
    #expect(rw.max_readahead == 128 << 10 && rw.max_background == 0 && rw.congestion_threshold == 0)
    let ro = try InitNegotiation.reply(to: offer(minor: 45), settings: .init(asyncDirectIO: true)).get()
    #expect(ro.flags == 0x4040_9029)
    // An older kernel: its own minor, and nothing it did not offer.
    let old = try InitNegotiation.reply(
      to: offer(minor: 31, flags: UInt32(FUSE_ASYNC_READ) | UInt32(FUSE_MAX_PAGES)),
      settings: .init(asyncDirectIO: true)
    ).get()
    #expect(old.minor == 31)
    #expect(old.flags == UInt32(FUSE_ASYNC_READ) | UInt32(FUSE_MAX_PAGES) | UInt32(FUSE_BIG_WRITES))
    // Upper flags offered through flags2 are not taken.
    let extended = try InitNegotiation.reply(
      to: offer(minor: 45, flags2: 0xffff_ffff), settings: .init(asyncDirectIO: false)
    ).get()
    #expect(extended.flags2 == 0)
  }

  /// FUSE_OVER_IO_URING (flags2 bit 9) only when asked for (io_uring=auto|on), offered with
  /// FUSE_INIT_EXT (a kernel offers it only while enable_uring is Y), and answered at 7.42.
  @Test func initTakesIOURingOnlyWhenAskedOfferedAndAt7_42() throws {
    let ext = UInt32(0x73ff_fffb) | UInt32(FUSE_INIT_EXT)
    let uring = UInt32(truncatingIfNeeded: FUSE_OVER_IO_URING >> 32)
    #expect(uring == 1 << 9)
    let asked = try InitNegotiation.reply(
      to: offer(minor: 45, flags: ext, flags2: uring), settings: .init(asyncDirectIO: false, ioURing: true)
    ).get()
    #expect(asked.minor == 42 && asked.flags2 == uring)
    let notAsked = try InitNegotiation.reply(
      to: offer(minor: 45, flags: ext, flags2: uring), settings: .init(asyncDirectIO: false)
    ).get()
    #expect(notAsked.flags2 == 0 && notAsked.flags == asked.flags)
    for (minor, flags, flags2) in [
      (41 as UInt32, ext, uring), (45, ext, 0), (45, ext & ~UInt32(FUSE_INIT_EXT), uring),
    ] {
      let r = try InitNegotiation.reply(
        to: offer(minor: minor, flags: flags, flags2: flags2),
        settings: .init(asyncDirectIO: false, ioURing: true)
      ).get()
      #expect(r.flags2 == 0, "minor \(minor) flags \(flags) flags2 \(flags2)")
    }
  }

  /// A request from an io_uring entry: the argument struct comes from the entry's argument area,
  /// names and write data from its payload.
  @Test func ringRequestsTakeArgumentsAndPayloadApart() throws {
    var area = [UInt8](repeating: 0, count: Int(FUSE_URING_OP_IN_OUT_SZ))
    var write = fuse_write_in()
    write.offset = 8192
    write.size = 5
    withUnsafeBytes(of: write) { area.replaceSubrange(0..<$0.count, with: $0) }
    let payload: [UInt8] = Array("hello".utf8)
    var header = fuse_in_header()
    header.opcode = UInt32(FUSE_WRITE.rawValue)
    try area.withUnsafeBytes { a in
      try payload.withUnsafeBytes { p in
        let request = KernelRequest(header: header, arguments: a, payload: p)
        let arguments = try request.argument(fuse_write_in.self)
        #expect(arguments.offset == 8192 && arguments.size == 5)
        let data = try request.trailing(after: MemoryLayout<fuse_write_in>.size)
        #expect(Array(data) == payload)
        // A name must end with a NUL within the payload.
        #expect(throws: FileSystemError.self) { try request.name(after: 0) }
        // An argument struct larger than the area is refused.
        #expect(throws: FileSystemError.self) { try request.trailing(after: 129) }
      }
    }
  }

  /// FUSE_PASSTHROUGH (flags2 bit 5) only when asked for, offered with FUSE_INIT_EXT, and
  /// answered at 7.40 or later; then with max_stack_depth 1 and never FUSE_WRITEBACK_CACHE.
  @Test func initTakesPassthroughOnlyWhenAskedOfferedAndAt7_40() throws {
    let ext = UInt32(0x73ff_fffb) | UInt32(FUSE_INIT_EXT)
    let all = UInt32(truncatingIfNeeded: UInt64(FUSE_PASSTHROUGH) >> 32) | 0x10
    let asked = try InitNegotiation.reply(
      to: offer(minor: 45, flags: ext, flags2: all), settings: .init(asyncDirectIO: false, passthrough: true)
    ).get()
    #expect(asked.minor == 42)
    #expect(UInt64(asked.flags2) << 32 == UInt64(FUSE_PASSTHROUGH))
    #expect(asked.flags & UInt32(FUSE_WRITEBACK_CACHE) == 0)
    var copy = asked
    #expect(cfuse_init_out_max_stack_depth(&copy) == 1)
    // Not asked (passthrough=off, or no CAP_SYS_ADMIN): nothing changes.
    var notAsked = try InitNegotiation.reply(
      to: offer(minor: 45, flags: ext, flags2: all), settings: .init(asyncDirectIO: false)
    ).get()
    #expect(notAsked.flags2 == 0 && cfuse_init_out_max_stack_depth(&notAsked) == 0)
    #expect(notAsked.flags == asked.flags)
    // A 7.39 kernel, or one that does not offer it, or no FUSE_INIT_EXT: not taken.
    for (minor, flags, flags2) in [
      (39 as UInt32, ext, all), (45, ext, 0), (45, ext & ~UInt32(FUSE_INIT_EXT), all),
    ] {
      var r = try InitNegotiation.reply(
        to: offer(minor: minor, flags: flags, flags2: flags2),
        settings: .init(asyncDirectIO: false, passthrough: true)
      ).get()
      #expect(r.flags2 == 0 && cfuse_init_out_max_stack_depth(&r) == 0, "7.\(minor) \(flags) \(flags2)")
    }
  }

  @Test func initRefusesKernelsBefore7_31() {
    for (major, minor) in [(7 as UInt32, 30 as UInt32), (7, 0), (6, 45), (8, 0)] {
      let result = InitNegotiation.reply(
        to: offer(minor: minor, major: major), settings: .init(asyncDirectIO: false))
      guard case .failure(let refusal) = result else {
        Issue.record("\(major).\(minor) was accepted")
        continue
      }
      #expect(refusal.description.contains("\(major).\(minor)"))
      #expect(refusal.description.contains("7.31 or later"))
    }
  }

  /// A request as the kernel writes it: header, then `body`.
  func request(_ opcode: UInt32, unique: UInt64, node: UInt64 = 1, body: [UInt8] = []) -> [UInt8] {
    var header = fuse_in_header()
    header.len = UInt32(MemoryLayout<fuse_in_header>.size + body.count)
    header.opcode = opcode
    header.unique = unique
    header.nodeid = node
    return withUnsafeBytes(of: header) { Array($0) } + body
  }

  func bytes<T>(of value: T) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }

  /// A context over a small test disk, a pipe as the device, and what comes out of it.
  final class Harness {
    let scratch: Scratch
    let context: FUSEContext
    let connection = KernelConnection(settings: .init(asyncDirectIO: true))
    var fds: [Int32] = [-1, -1]

    init() throws {
      scratch = try Scratch("loop")
      let layer = try TestLayer(path: scratch.file("disk"), size: 1 << 20, segments: [])
      let tree = VirtualTree(chain: LayerChain(top: layer), writable: false, logger: Logger(label: "test"))
      context = FUSEContext(tree: tree, options: MountOptions(), logger: Logger(label: "test"))
      _ = fds.withUnsafeMutableBufferPointer { pipe($0.baseAddress) }
      // Nonblocking reads: "no reply" shows as EAGAIN instead of a hang.
      _ = fcntl(fds[0], F_SETFL, O_NONBLOCK)
    }

    deinit {
      for fd in fds { close(fd) }
      scratch.remove()
    }

    func send(_ bytes: [UInt8]) -> KernelDispatch.Outcome? {
      bytes.withUnsafeBytes { raw in
        guard let request = KernelRequest(raw) else { return nil }
        return KernelDispatch.dispatch(
          request, reply: FUSERequest(device: fds[1], unique: request.unique), connection: connection,
          context: context, pipe: nil)
      }
    }

    /// The next reply: its header and data; nil when there is none.
    func reply() -> (header: fuse_out_header, data: [UInt8])? {
      var buffer = [UInt8](repeating: 0, count: 1 << 16)
      let n = buffer.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
      guard n >= MemoryLayout<fuse_out_header>.size else { return nil }
      let header = buffer.withUnsafeBytes { $0.loadUnaligned(as: fuse_out_header.self) }
      #expect(Int(header.len) == n)
      return (header, Array(buffer[MemoryLayout<fuse_out_header>.size..<n]))
    }
  }

  @Test func dispatchAnswersUnknownOpcodesWithENOSYSAndEchoesUnique() throws {
    let h = try Harness()
    // Nothing but INIT before INIT.
    #expect(h.send(request(UInt32(FUSE_GETATTR.rawValue), unique: 2)) == .next)
    let early = h.reply()
    #expect(early?.header.error == -EIO && early?.header.unique == 2)
    #expect(
      h.send(request(UInt32(FUSE_INIT.rawValue), unique: 4, node: 0, body: bytes(of: offer(minor: 45))))
        == .next)
    let initReply = try #require(h.reply())
    #expect(initReply.header.error == 0 && initReply.header.unique == 4)
    #expect(initReply.data.count == MemoryLayout<fuse_init_out>.size)
    #expect(h.connection.negotiated?.minor == 42)
    // A second INIT is an error.
    #expect(
      h.send(request(UInt32(FUSE_INIT.rawValue), unique: 6, node: 0, body: bytes(of: offer(minor: 45))))
        == .next)
    #expect(h.reply()?.header.error == -EIO)
    // Unknown and unimplemented opcodes.
    for (opcode, unique) in [
      (UInt32(FUSE_GETXATTR.rawValue), 8 as UInt64), (UInt32(FUSE_MKDIR.rawValue), 10), (9999, 0xdead_beef),
    ] {
      #expect(h.send(request(opcode, unique: unique)) == .next)
      let r = try #require(h.reply())
      #expect(r.header.error == -ENOSYS && r.header.unique == unique && r.data.isEmpty)
    }
    // FORGET, BATCH_FORGET and INTERRUPT have no reply.
    for opcode in [FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT] {
      #expect(
        h.send(request(UInt32(opcode.rawValue), unique: 12, body: [UInt8](repeating: 0, count: 16))) == .next)
      #expect(h.reply() == nil)
    }
    // GETATTR of the root works.
    #expect(
      h.send(request(UInt32(FUSE_GETATTR.rawValue), unique: 14, body: bytes(of: fuse_getattr_in()))) == .next)
    let attr = try #require(h.reply())
    #expect(attr.header.error == 0 && attr.header.unique == 14)
    let out = attr.data.withUnsafeBytes { $0.loadUnaligned(as: fuse_attr_out.self) }
    #expect(out.attr.ino == 1 && out.attr.mode & UInt32(Glibc.S_IFMT) == UInt32(Glibc.S_IFDIR))
    // DESTROY is answered and ends the loop.
    #expect(h.send(request(UInt32(FUSE_DESTROY.rawValue), unique: 16)) == .destroyed)
    #expect(h.reply()?.header.error == 0)
  }

  @Test func lengthsThatDisagreeAreRefused() throws {
    let h = try Harness()
    _ = h.send(request(UInt32(FUSE_INIT.rawValue), unique: 2, node: 0, body: bytes(of: offer(minor: 45))))
    _ = h.reply()
    // A header whose length is not what was read.
    var short = request(UInt32(FUSE_GETATTR.rawValue), unique: 4)
    short[0] = 200
    #expect(h.send(short) == nil)
    #expect(h.send(Array(short.prefix(20))) == nil)
    // LOOKUP without the name's NUL; READ without its arguments; WRITE whose size disagrees with
    // the bytes sent.
    #expect(h.send(request(UInt32(FUSE_LOOKUP.rawValue), unique: 6, body: Array("disk.raw".utf8))) == .next)
    let lookup = h.reply()
    #expect(lookup?.header.error == -EINVAL && lookup?.header.unique == 6)
    #expect(h.send(request(UInt32(FUSE_READ.rawValue), unique: 8, node: 2, body: [1, 2, 3])) == .next)
    #expect(h.reply()?.header.error == -EINVAL)
    var write = fuse_write_in()
    write.size = 4096
    #expect(
      h.send(request(UInt32(FUSE_WRITE.rawValue), unique: 10, node: 2, body: bytes(of: write) + [0, 0]))
        == .next)
    #expect(h.reply()?.header.error == -EINVAL)
    // A short (pre-7.36) INIT is taken, a shorter one is not, even before INIT.
    let h2 = try Harness()
    #expect(
      h2.send(
        request(
          UInt32(FUSE_INIT.rawValue), unique: 2, node: 0, body: Array(bytes(of: offer(minor: 31)).prefix(12)))
      ) == .next)
    #expect(h2.reply()?.header.error == -EINVAL)
    #expect(
      h2.send(
        request(
          UInt32(FUSE_INIT.rawValue), unique: 4, node: 0, body: Array(bytes(of: offer(minor: 31)).prefix(16)))
      ) == .next)
    let accepted = try #require(h2.reply())
    #expect(accepted.header.error == 0 && h2.connection.negotiated?.minor == 31)
    // A kernel too old: EPROTO, and the loop ends with the refusal.
    let h3 = try Harness()
    let outcome = h3.send(
      request(UInt32(FUSE_INIT.rawValue), unique: 2, node: 0, body: bytes(of: offer(minor: 30))))
    #expect(outcome == .refused(InitNegotiation.Refusal(major: 7, minor: 30)))
    #expect(h3.reply()?.header.error == -EPROTO)
  }
}
