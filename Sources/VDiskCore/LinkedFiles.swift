import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// The rules for files an image names (backing files, VMDK extent files, a qcow2 external data
/// file): the names are untrusted input, so they are local paths only, and with `backing_dir`
/// they must resolve inside one directory.
public struct LinkedFiles: Sendable {
  /// `-o backing_dir=DIR` as given; nil: files may lie anywhere.
  public var directory: String?

  public init(directory: String? = nil) {
    self.directory = directory
  }

  /// Refuses a name that is not a local path: QEMU's `json:` syntax, or a protocol prefix
  /// (`nbd:`, `http://…`, `ssh:`). QEMU's rule (block.c, `path_has_protocol`): a name whose first
  /// `:` comes before any `/` names a protocol; `./a:b` and `/a:b` are paths. A Windows drive
  /// (`C:\…`, `C:/…`) or device path (`\\?\…`), which VHD and VHDX parent locators record, is a
  /// path too: those drivers turn it into local candidates. Throws `.unsupported` naming `image`.
  public static func checkName(_ name: String, what: String, namedBy image: String) throws {
    if name.hasPrefix("json:") {
      throw VDiskError.unsupported(
        image,
        "\(what) name \"\(name)\" uses QEMU's json: syntax; vdiskfs opens \(what)s by path only")
    }
    guard let scheme = protocolPrefix(of: name) else { return }
    throw VDiskError.unsupported(
      image,
      "\(what) name \"\(name)\" has the protocol prefix \"\(scheme):\"; vdiskfs opens \(what)s by path only (a name whose first ':' comes before any '/' names a protocol, as in QEMU; write \"./\(name)\" for a file whose name has a colon)"
    )
  }

  /// The protocol a name starts with (the part before its first `:`), nil for a path.
  public static func protocolPrefix(of name: String) -> String? {
    guard let colon = name.firstIndex(of: ":") else { return nil }
    if let slash = name.firstIndex(of: "/"), slash < colon { return nil }
    if name.hasPrefix("\\\\") { return nil }
    let prefix = name[..<colon]
    let after = name[name.index(after: colon)...]
    if prefix.count == 1, let letter = prefix.first, letter.isASCII, letter.isLetter,
      after.isEmpty || after.hasPrefix("\\") || after.hasPrefix("/")
    {
      return nil
    }
    return String(prefix)
  }

  /// The real path of `directory` (symbolic links and `..` resolved), or `.notFound`.
  public func resolvedDirectory() throws -> String? {
    guard let directory else { return nil }
    guard let real = Self.realPath(directory) else {
      throw VDiskError(.notFound, path: directory, "backing_dir does not exist", errno: ENOENT)
    }
    guard (try? FileDescriptorSource.fileType(atPath: real)) == .directory else {
      throw VDiskError(.invalidArgument, path: directory, "backing_dir is not a directory")
    }
    return real
  }

  /// `path` (which exists) with symbolic links and `..` resolved; with `backing_dir`, it must lie
  /// inside that directory, or `.notPermitted` naming `image`, the name it recorded and where the
  /// name leads. Open the returned path, not `path`.
  public func admit(_ path: String, name: String, what: String, namedBy image: String) throws -> String {
    guard let real = Self.realPath(path) else {
      throw VDiskError(
        .notFound, path: image, "\(what) \(path) (named \"\(name)\" by \(image)) does not exist",
        errno: ENOENT)
    }
    guard let inside = try resolvedDirectory() else { return real }
    guard Self.path(real, isInside: inside) else {
      throw VDiskError(
        .notPermitted, path: image,
        "\(what) \"\(name)\" resolves to \(real), which is outside backing_dir \(inside)")
    }
    return real
  }

  /// With `backing_dir`: checks that the file `file` has open really lies inside it (the path
  /// the kernel gives for its descriptor), so that a symbolic link swapped in after `admit`
  /// cannot lead elsewhere. Nothing to check without a directory or a descriptor.
  public func verifyOpened(_ file: ImageFile, name: String, what: String, namedBy image: String) throws {
    guard let inside = try resolvedDirectory(), let fd = file.descriptor else { return }
    let opened = Self.readLink("/proc/self/fd/\(fd.rawValue)") ?? file.path
    guard Self.path(opened, isInside: inside) else {
      throw VDiskError(
        .notPermitted, path: image,
        "\(what) \"\(name)\" opened \(opened), which is outside backing_dir \(inside)")
    }
  }

  static func path(_ path: String, isInside directory: String) -> Bool {
    directory == "/" || path.hasPrefix(directory.hasSuffix("/") ? directory : directory + "/")
  }

  public static func realPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
  }

  private static func readLink(_ path: String) -> String? {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink(path, &buffer, buffer.count - 1)
    guard n > 0 else { return nil }
    return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }
}
