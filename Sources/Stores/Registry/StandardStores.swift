import HTTPStore
import RBDStore
import RemoteStore
import S3Store

extension StoreRegistry {
  /// The stores vdiskfs serves, in the order locations are matched. A new store is one folder
  /// under Sources/Stores, one line in Package.swift's `stores` and one line here.
  public static let standard = StoreRegistry(stores: [RBDStore.self, S3Store.self, HTTPStore.self])
}
