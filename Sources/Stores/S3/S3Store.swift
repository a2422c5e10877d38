import HTTPStore
import Logging
import RemoteStore
import Synchronization
import VDiskCore

/// Objects in S3 and S3-compatible stores (Ceph RGW, MinIO): `s3://BUCKET/KEY`, read with
/// SigV4-signed ranged GETs, or unsigned ones (anonymous, for public objects) without
/// credentials or with `-o s3_unsigned`. Read-only (`writable` is ignored; the object is not
/// writable).
public enum S3Store: RemoteStoreKind {
  public static let prefixes = [S3Location.prefix]

  public static func open(_ location: String, writable: Bool, options: RemoteOptions) throws
    -> any RemoteObject
  {
    try open(location, options: options, environment: S3Configuration.processEnvironment)
  }

  /// `open` with the environment given (credentials, region, endpoint, HOME).
  public static func open(_ location: String, options: RemoteOptions, environment: [String: String]) throws
    -> HTTPRangeObject
  {
    let object = try S3Location(location)
    let config = try S3Configuration(location: location, options: options, environment: environment)
    var endpoint = HTTPEndpoint(url: object.url(endpoint: config.endpoint, region: config.region))
    if let credentials = config.credentials {
      endpoint.awsSigV4 = "aws:amz:\(config.region):s3"
      endpoint.credentials = credentials.accessKeyID + ":" + credentials.secretAccessKey
      // curl 7.88 does not send x-amz-content-sha256, which RGW requires (AWS SigV4 for S3: every
      // request carries it); a GET has no body to hash, so UNSIGNED-PAYLOAD.
      endpoint.headers = ["x-amz-content-sha256: UNSIGNED-PAYLOAD"]
      if let token = credentials.sessionToken { endpoint.headers.append("x-amz-security-token: \(token)") }
    } else if let reason = config.anonymousReason, !announcedAnonymous.exchange(true, ordering: .relaxed) {
      Logger(label: "vdiskfs").info("\(location): \(reason): sending unsigned (anonymous) S3 requests")
    }
    endpoint.pathAsIs = true
    return try HTTPOpening.open(
      location, endpoint: endpoint, client: HTTPClient(options: options), head: false
    ) { judge(object, location: location, anonymous: config.credentials == nil, $0) }
  }

  /// Whether the info line about anonymous requests was logged (once per process).
  private static let announcedAnonymous = Atomic<Bool>(false)

  /// An S3 error answer at open, by its status and the error document's `<Code>`.
  static func judge(_ object: S3Location, location: String, anonymous: Bool, _ response: HTTPResponse)
    -> VDiskError
  {
    let code = s3ErrorCode(response.errorBody)
    let named = code ?? "HTTP \(response.status)"
    switch (response.status, code) {
    case (404, "NoSuchBucket"):
      return VDiskError(.notFound, path: location, "no such bucket '\(object.bucket)'")
    case (404, "NoSuchKey"):
      return VDiskError(.notFound, path: location, "no such key '\(object.key)' in bucket '\(object.bucket)'")
    case (404, _): return VDiskError(.notFound, path: location, "not found (\(named))")
    case (401, _) where anonymous, (403, _) where anonymous:
      return VDiskError(
        .notPermitted, path: location,
        "the object is not public: an anonymous request was refused (\(named)); give credentials with "
          + "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a profile in ~/.aws/credentials (AWS_PROFILE), "
          + "without -o s3_unsigned")
    case (401, _), (403, _): return VDiskError(.notPermitted, path: location, "credentials refused: \(named)")
    case (301, _), (307, _):
      return VDiskError(.io, path: location, "the bucket is served by another endpoint or region (\(named))")
    default:
      return VDiskError(
        .io, path: location, "S3 refused the request (HTTP \(response.status)\(code.map { ", \($0)" } ?? ""))"
      )
    }
  }
}
