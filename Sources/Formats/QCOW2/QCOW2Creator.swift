import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// Creates new, empty qcow2 v3 images (for overlays): header with a backing file and its
/// format, one refcount table cluster, one refcount block, and an empty L1 table — the layout
/// `qemu-img create` produces, so `qemu-img check` finds every refcount exact.
public enum QCOW2Creator {
  /// Creates `path` (which must not exist) with `virtualSize`, optionally over `backing`
  /// (recorded as given) of `backingFormat`. Cluster size 64 KiB, 16-bit refcounts.
  public static func create(
    at path: String, virtualSize: UInt64, backing: String? = nil, backingFormat: String? = nil,
    clusterBits: UInt32 = 16
  ) throws {
    let clusterSize = UInt64(1) << UInt64(clusterBits)
    let l2Entries = clusterSize / 8
    let clusters = (virtualSize + clusterSize - 1) / clusterSize
    let l1Size = (clusters + l2Entries - 1) / l2Entries
    let l1Clusters = max(1, (l1Size * 8 + clusterSize - 1) / clusterSize)
    let metadataClusters = 3 + l1Clusters
    // One 16-bit refcount block covers clusterSize / 2 clusters.
    guard metadataClusters <= clusterSize / 2, l1Size * 8 <= 32 << 20 else {
      throw VDiskError(
        .invalidArgument, path: path, "virtual size \(virtualSize) is too large for an overlay")
    }
    var header = [UInt8](repeating: 0, count: Int(clusterSize))
    func put(_ value: UInt64, at offset: Int, width: Int) {
      for i in 0..<width {
        header[offset + i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * (width - 1 - i)))
      }
    }
    let headerLength = 112
    var extensions: [UInt8] = []
    if let backingFormat {
      let name = Array(backingFormat.utf8)
      extensions += bigEndian(UInt32(0xE279_2ACA)) + bigEndian(UInt32(name.count)) + name
      extensions += [UInt8](repeating: 0, count: (8 - name.count % 8) % 8)
    }
    extensions += [UInt8](repeating: 0, count: 8)  // end of the extension area
    let backingName = backing.map { Array($0.utf8) } ?? []
    let backingOffset = headerLength + extensions.count
    guard backingName.count <= 1023, backingOffset + backingName.count <= Int(clusterSize) else {
      throw VDiskError(.invalidArgument, path: path, "backing file name is too long")
    }
    put(0x5146_49FB, at: 0, width: 4)  // magic
    put(3, at: 4, width: 4)  // version
    put(backingName.isEmpty ? 0 : UInt64(backingOffset), at: 8, width: 8)
    put(UInt64(backingName.count), at: 16, width: 4)
    put(UInt64(clusterBits), at: 20, width: 4)
    put(virtualSize, at: 24, width: 8)
    put(0, at: 32, width: 4)  // no encryption
    put(l1Size, at: 36, width: 4)
    put(3 * clusterSize, at: 40, width: 8)  // L1 table
    put(clusterSize, at: 48, width: 8)  // refcount table
    put(1, at: 56, width: 4)  // refcount table clusters
    put(4, at: 96, width: 4)  // refcount_order: 16-bit refcounts
    put(UInt64(headerLength), at: 100, width: 4)
    header.replaceSubrange(headerLength..<headerLength + extensions.count, with: extensions)
    header.replaceSubrange(backingOffset..<backingOffset + backingName.count, with: backingName)

    var refcountTable = [UInt8](repeating: 0, count: Int(clusterSize))
    refcountTable.replaceSubrange(0..<8, with: bigEndian(UInt64(2 * clusterSize)))
    var refcountBlock = [UInt8](repeating: 0, count: Int(clusterSize))
    for cluster in 0..<Int(metadataClusters) { refcountBlock[2 * cluster + 1] = 1 }

    let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
      let e = errno
      throw VDiskError(
        e == EEXIST ? .invalidArgument : .io, path: path, "cannot create: \(String(cString: strerror(e)))",
        errno: e)
    }
    close(fd)
    let file = try ImageFile.open(path, writable: true)
    do {
      try header.withUnsafeBytes { try file.write($0, at: 0) }
      try refcountTable.withUnsafeBytes { try file.write($0, at: clusterSize) }
      try refcountBlock.withUnsafeBytes { try file.write($0, at: 2 * clusterSize) }
      try file.setSize(metadataClusters * clusterSize)  // the L1 table: zeros
      try file.dataSync()
    } catch {
      unlink(path)
      throw error
    }
  }

  private static func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.bigEndian) { Array($0) }
  }
}
