import HTTPStore
import RBDStore
import RemoteStore
import RemoteStores
import Testing

@Suite struct RemoteLocationTests {
  @Test func relativeNamesResolveInTheLocationsFolder() {
    #expect(RemoteLocation.resolve("base.qcow2", relativeTo: "s3://b/vm/top.qcow2") == "s3://b/vm/base.qcow2")
    #expect(RemoteLocation.resolve("base", relativeTo: "rbd:pool/top") == "rbd:pool/base")
    #expect(RemoteLocation.resolve("base", relativeTo: "rbd:pool/top@snap") == "rbd:pool/base")
    #expect(
      RemoteLocation.resolve("d/e.vmdk", relativeTo: "https://h:8080/a/b.vmdk") == "https://h:8080/a/d/e.vmdk"
    )
  }

  @Test func absoluteNamesResolveFromTheStoresRoot() {
    #expect(
      RemoteLocation.resolve("/x/base.qcow2", relativeTo: "s3://b/vm/top.qcow2") == "s3://b/x/base.qcow2")
    #expect(RemoteLocation.resolve("/x/base.qcow2", relativeTo: "http://h/vm/top") == "http://h/x/base.qcow2")
    #expect(RemoteLocation.resolve("/var/lib/base", relativeTo: "rbd:pool/top") == "rbd:pool/base")
  }

  /// A presigned URL's query string (whose values may hold '/') and a fragment are not part of
  /// the folder a name resolves in.
  @Test func namesResolveAgainstAURLWithoutItsQueryString() {
    let top =
      "https://h:8443/vm/top.qcow2?X-Amz-Credential=AKID/20260101/us-east-1/s3/aws4_request&X-Amz-Signature=ab12"
    #expect(HTTPStore.resolve("base.qcow2", relativeTo: top) == "https://h:8443/vm/base.qcow2")
    #expect(HTTPStore.resolve("d/e.vmdk", relativeTo: top) == "https://h:8443/vm/d/e.vmdk")
    #expect(HTTPStore.resolve("/other/base.qcow2", relativeTo: top) == "https://h:8443/other/base.qcow2")
    #expect(HTTPStore.resolve("base", relativeTo: "http://h/a/top#frag/x") == "http://h/a/base")
    #expect(HTTPStore.resolve("base", relativeTo: "http://h/a/top") == "http://h/a/base")
    // A URL without a path: its names are at the server's root.
    #expect(HTTPStore.resolve("base", relativeTo: "http://h:8080?sig=a/b") == "http://h:8080/base")
    #expect(RemoteLocation.resolve("base", relativeTo: "https://h") == "https://h/base")
    #expect(RemoteLocation.withoutQuery(top) == "https://h:8443/vm/top.qcow2")
    #expect(RemoteLocation.withoutQuery("http://h/a?") == "http://h/a")
  }

  /// Names an RBD image records resolve in its pool and namespace, by their last component (RBD
  /// has no folders, and another '/' would name another namespace).
  @Test func rbdNamesResolveInTheSamePoolAndNamespace() {
    #expect(RBDStore.resolve("base", relativeTo: "rbd:pool/ns/top@snap") == "rbd:pool/ns/base")
    #expect(RBDStore.resolve("sub/base", relativeTo: "rbd:pool/ns/top") == "rbd:pool/ns/base")
    #expect(RBDStore.resolve("/var/lib/base", relativeTo: "rbd:pool/top") == "rbd:pool/base")
    #expect(RBDStore.resolve("sub/base", relativeTo: "rbd:pool/top") == "rbd:pool/base")
  }

  /// The chain opener gets names the formats already joined to the image's location the way
  /// they join paths: `RemoteFiles.resolve` has the store resolve the name itself.
  @Test func namesJoinedByAFormatAreResolvedByTheStore() {
    let files = RemoteFiles(registry: .standard, options: RemoteOptions())
    let top = "https://h/vm/top.qcow2?sig=a/b"
    // What PlanContext.resolve makes of "base.qcow2": joined after the query's '/'.
    #expect(
      files.resolve("https://h/vm/top.qcow2?sig=a/base.qcow2", relativeTo: top) == "https://h/vm/base.qcow2")
    #expect(files.resolve("/abs/base.qcow2", relativeTo: top) == "https://h/abs/base.qcow2")
    #expect(files.resolve("rbd:p/ns/sub/base", relativeTo: "rbd:p/ns/top") == "rbd:p/ns/base")
    #expect(
      files.resolve("s3://b/vm/base.qcow2", relativeTo: "s3://b/vm/top.qcow2") == "s3://b/vm/base.qcow2")
    // A remote name recorded by a local image, or naming another place, stands as it is.
    #expect(files.resolve("s3://other/base", relativeTo: "/local/top.qcow2") == "s3://other/base")
    #expect(files.resolve("s3://other/base", relativeTo: "https://h/vm/top") == "s3://other/base")
    #expect(files.resolve("base.qcow2", relativeTo: "/local/top.qcow2") == "/local/base.qcow2")
  }
}
