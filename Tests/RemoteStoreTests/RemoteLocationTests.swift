import RBDStore
import RemoteStore
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

  /// Names an RBD image records resolve in its pool and namespace, by their last component (RBD
  /// has no folders, and another '/' would name another namespace).
  @Test func rbdNamesResolveInTheSamePoolAndNamespace() {
    #expect(RBDStore.resolve("base", relativeTo: "rbd:pool/ns/top@snap") == "rbd:pool/ns/base")
    #expect(RBDStore.resolve("sub/base", relativeTo: "rbd:pool/ns/top") == "rbd:pool/ns/base")
    #expect(RBDStore.resolve("/var/lib/base", relativeTo: "rbd:pool/top") == "rbd:pool/base")
    #expect(RBDStore.resolve("sub/base", relativeTo: "rbd:pool/top") == "rbd:pool/base")
  }
}
