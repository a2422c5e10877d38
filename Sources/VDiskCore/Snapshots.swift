/// One internal snapshot of an image, as `qemu-img snapshot -l` lists it.
public struct SnapshotInfo: Sendable, Equatable {
  /// The unique id string (`1`, `2`, …).
  public var id: String
  public var name: String
  /// The snapshot's virtual disk size (extra data field; else the image's size at open).
  public var virtualSize: UInt64
  /// Size of the saved VM state (0 for disk-only snapshots).
  public var vmStateSize: UInt64
  /// Wall-clock time the snapshot was taken.
  public var dateSeconds: UInt32
  public var dateNanoseconds: UInt32
  /// How long the guest had been running, in nanoseconds (`VM CLOCK`).
  public var vmClockNanoseconds: UInt64

  public init(
    id: String, name: String, virtualSize: UInt64, vmStateSize: UInt64, dateSeconds: UInt32,
    dateNanoseconds: UInt32, vmClockNanoseconds: UInt64
  ) {
    self.id = id
    self.name = name
    self.virtualSize = virtualSize
    self.vmStateSize = vmStateSize
    self.dateSeconds = dateSeconds
    self.dateNanoseconds = dateNanoseconds
    self.vmClockNanoseconds = vmClockNanoseconds
  }
}

/// A layer that holds internal snapshots (qcow2). The snapshot table may change while mounted
/// read-only (QEMU creates or deletes snapshots): `generation` is cheap to ask and changes when it
/// does, so that callers re-list only then.
public protocol SnapshotSource: ImageLayer {
  /// A value that changes whenever the snapshot table may have changed (re-read from the file).
  func snapshotGeneration() throws -> UInt64
  /// The snapshots as the file holds them now (re-read and validated).
  func snapshots() throws -> [SnapshotInfo]
  /// A read-only layer showing snapshot `id` (same backing file as this layer).
  func snapshotLayer(id: String) throws -> any ImageLayer
}

extension SnapshotInfo {
  /// Directory names for `snapshots/`: the snapshot names made path-safe. `/` and NUL become `_`;
  /// an empty name, `.` and `..` become the id; names longer than 200 bytes are cut; names that
  /// then collide are all told apart by `@id`. The same function names them in `vdiskfs info`.
  public static func directoryNames(_ snapshots: [SnapshotInfo]) -> [String] {
    func safe(_ s: SnapshotInfo) -> String {
      var name = String(s.name.map { $0 == "/" || $0 == "\0" ? "_" : $0 })
      while name.utf8.count > 200 { name.removeLast() }
      return name.isEmpty || name == "." || name == ".." ? s.id : name
    }
    let names = snapshots.map(safe)
    var counts: [String: Int] = [:]
    for n in names { counts[n, default: 0] += 1 }
    return zip(snapshots, names).map { s, n in counts[n, default: 0] > 1 ? "\(n)@\(s.id)" : n }
  }
}
