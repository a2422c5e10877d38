/// How remote images are reached and cached: the `-o` options of a mount (and the matching
/// `info`/`map` options). Stores read their credentials and defaults from the environment
/// themselves (`CEPH_CONF`, `AWS_*`); what is set here wins.
public struct RemoteOptions: Sendable, Equatable {
  /// `-o ceph_conf=FILE`; nil: `CEPH_CONF`, then librados' default search.
  public var cephConf: String?
  /// `-o ceph_id=NAME`: the client id (`admin` for client.admin); nil: librados' default.
  public var cephID: String?
  /// `-o s3_endpoint=URL`; nil: `AWS_ENDPOINT_URL`, then AWS's regional endpoint.
  public var s3Endpoint: String?
  /// `-o s3_region=REGION`; nil: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile, `us-east-1`.
  public var s3Region: String?
  /// `-o s3_unsigned`: send S3 requests unsigned (anonymous) even when credentials exist.
  public var s3Unsigned = false
  /// `-o sslverify=off`: do not verify TLS certificates (a warning is logged).
  public var verifyTLS = true
  /// `-o remote_cache=SIZE`: the in-memory block cache, shared by every remote object of a mount.
  public var cacheBytes = RemoteOptions.defaultCacheBytes
  /// `-o cache_dir=DIR`: a persistent block cache that survives remounts, keyed by the object's
  /// identity and version.
  public var cacheDirectory: String?
  /// `-o connections=N`: parallel requests per object (the connection pool).
  public var connections = 8
  /// Seconds to wait for a connection, and for a stalled transfer, before a try counts as failed.
  public var timeoutSeconds = 10
  /// How many times a transient failure is retried (with doubling backoff from 100 ms) before the
  /// read fails with EIO.
  public var retries = 4

  public static let defaultCacheBytes = 256 << 20

  public init() {}
}
