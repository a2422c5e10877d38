import CRBD
import RemoteStore
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// The librados/librbd handles behind one opened image: a cluster connection, an I/O context on
/// the pool, the image, and whether this client holds the image's exclusive lock. Filled in step
/// by step while opening (one thread), read-only afterwards; `deinit` undoes whatever was done,
/// so an open that fails half way leaks nothing. librbd image handles are thread-safe.
final class RBDConnection: @unchecked Sendable {
  private(set) var cluster: rados_t?
  private(set) var ioctx: rados_ioctx_t?
  var image: rbd_image_t?
  var holdsLock = false

  deinit {
    if let image {
      if holdsLock { _ = rbd_lock_release(image) }
      _ = rbd_close(image)
    }
    if let ioctx { rados_ioctx_destroy(ioctx) }
    if let cluster { rados_shutdown(cluster) }
  }

  /// Connects to the cluster `options` name (`cephConf`, else `CEPH_CONF`, else librados' own
  /// search) as `cephID`, with every monitor and OSD call bounded by `timeoutSeconds`, and opens
  /// `pool`, and in it `namespace` when given (which must exist). `readOnly` turns librbd's cache
  /// off (the block cache above caches reads).
  init(pool: String, namespace: String? = nil, location: String, options: RemoteOptions, readOnly: Bool)
    throws(VDiskError)
  {
    var handle: rados_t?
    let id = options.cephID.flatMap { $0.isEmpty ? nil : $0 }
    let created =
      if let id, id.hasPrefix("client.") {
        rados_create2(&handle, "ceph", id, 0)
      } else {
        rados_create(&handle, id)
      }
    guard created == 0, let handle else {
      throw VDiskError(.io, path: location, "cannot set up a Ceph client: \(rbdMessage(created))")
    }
    cluster = handle

    let conf = options.cephConf ?? getenv("CEPH_CONF").map { String(cString: $0) }
    let read = rados_conf_read_file(handle, conf)
    if read < 0 {
      let which =
        conf.map { "Ceph configuration \($0)" } ?? "the default Ceph configuration (/etc/ceph/ceph.conf)"
      let kind: VDiskError.Kind = read == -ENOENT ? .notFound : .invalidArgument
      throw VDiskError(
        kind, path: location,
        "cannot read \(which): \(rbdMessage(read)); set CEPH_CONF or -o ceph_conf=FILE")
    }
    // No call may hang when the cluster is down: connecting, monitor and OSD operations time out.
    let seconds = String(max(1, options.timeoutSeconds))
    let settings = [
      ("client_mount_timeout", seconds), ("rados_mon_op_timeout", seconds), ("rados_osd_op_timeout", seconds),
      // librados' own complaints (e.g. "authenticate timed out") would duplicate our one message.
      ("log_to_stderr", "false"), ("err_to_stderr", "false"),
    ]
    for (name, value) in settings + (readOnly ? [("rbd_cache", "false")] : []) {
      let status = rados_conf_set(handle, name, value)
      guard status == 0 else {
        throw VDiskError(.io, path: location, "cannot set the Ceph option \(name): \(rbdMessage(status))")
      }
    }

    let connected = rados_connect(handle)
    guard connected == 0 else {
      let what = conf.map { "the Ceph cluster of \($0)" } ?? "the Ceph cluster"
      switch -connected {
      case ETIMEDOUT:
        throw VDiskError(
          .io, path: location, "cannot reach \(what): no answer within \(seconds) s", errno: EIO)
      case EACCES, EPERM, ENOENT:
        throw VDiskError(
          .notPermitted, path: location, "\(what) refused the client: \(rbdMessage(connected))")
      default:
        throw VDiskError(
          .io, path: location, "cannot connect to \(what): \(rbdMessage(connected))", errno: EIO)
      }
    }

    var context: rados_ioctx_t?
    let opened = rados_ioctx_create(handle, pool, &context)
    guard opened == 0, let context else {
      if opened == -ENOENT { throw VDiskError(.notFound, path: location, "pool \(pool) does not exist") }
      throw VDiskError(.io, path: location, "cannot open pool \(pool): \(rbdMessage(opened))", errno: EIO)
    }
    ioctx = context
    if let namespace {
      rados_ioctx_set_namespace(context, namespace)
      var exists = false
      let checked = rbd_namespace_exists(context, namespace, &exists)
      guard checked == 0 else {
        throw VDiskError(
          .io, path: location,
          "cannot look up namespace \(namespace) in pool \(pool): \(rbdMessage(checked))",
          errno: EIO)
      }
      guard exists else {
        throw VDiskError(.notFound, path: location, "namespace \(namespace) does not exist in pool \(pool)")
      }
    }
  }

  /// This client's id on the cluster (the `id` of its header watch).
  var instanceID: UInt64 { cluster.map { rados_get_instance_id($0) } ?? 0 }
}

/// A negative errno from librados/librbd as words.
func rbdMessage<Code: BinaryInteger>(_ code: Code) -> String {
  let number = Int32(clamping: -Int64(code))
  return "\(String(cString: strerror(number))) (errno \(number))"
}

/// A failed librbd data call as a `RemoteFailure`: timeouts and lost connections may succeed on a
/// retry; a vanished image means the object is not the version opened; the rest is final.
func rbdFailure<Code: BinaryInteger>(_ code: Code, location: String, _ what: String) -> RemoteFailure {
  let number = Int32(clamping: -Int64(code))
  let detail = "\(what) failed: \(rbdMessage(code))"
  switch number {
  case ETIMEDOUT, EAGAIN, EINTR, ECONNREFUSED, ECONNRESET, ENOTCONN:
    return RemoteFailure(.transient, location: location, detail)
  case ENOENT:
    return RemoteFailure(.changed, location: location, "\(what) failed: the image was removed")
  // ESHUTDOWN is librbd's EBLOCKLISTED: another client fenced this one off.
  case EROFS, ESHUTDOWN:
    return RemoteFailure(.final(.locked), location: location, "\(detail): the exclusive lock was lost")
  default:
    return RemoteFailure(.final(.io), location: location, detail)
  }
}
