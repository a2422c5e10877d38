import Foundation
import RemoteStore
import VDiskCore

/// A store for tests of the seam: `dir:///ABSOLUTE/PATH` serves a local file as a remote object
/// (no descriptor reaches the engine, so everything goes through the block cache), counting
/// fetches.
enum DirectoryStore: RemoteStoreKind {
  static let prefixes = ["dir://"]

  static func open(_ location: String, writable: Bool, options: RemoteOptions) throws -> any RemoteObject {
    let path = String(location.dropFirst("dir://".count))
    guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
      let size = attributes[.size] as? UInt64
    else {
      throw VDiskError(.notFound, path: location, "no such object")
    }
    guard let handle = FileHandle(forReadingAtPath: path) else {
      throw VDiskError(.notPermitted, path: location, "cannot open")
    }
    return DirectoryObject(location: location, handle: handle, size: size)
  }
}

final class DirectoryObject: RemoteObject, @unchecked Sendable {
  let location: String
  let version: RemoteVersion
  let parallelism = 4
  private let handle: FileHandle

  init(location: String, handle: FileHandle, size: UInt64) {
    self.location = location
    self.handle = handle
    version = RemoteVersion(size: size, tag: "size-\(size)")
  }

  func fetch(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
    let n = pread(handle.fileDescriptor, buffer.baseAddress, buffer.count, off_t(offset))
    guard n >= 0 else { throw RemoteFailure(.transient, location: location, "pread failed") }
    return n
  }
}
