import Foundation

/// The read-ahead (KiB) of the FUSE mount at `mountpoint`, from its bdi in sysfs; nil when the
/// mount is not found.
public func mountReadAheadKilobytes(_ mountpoint: String) throws -> Int? {
  let mountinfo = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
  guard
    let device = mountinfo.split(separator: "\n")
      .first(where: { $0.split(separator: " ")[4] == Substring(mountpoint) })?.split(separator: " ")[2]
  else { return nil }
  let text = try String(contentsOfFile: "/sys/class/bdi/\(device)/read_ahead_kb", encoding: .utf8)
  return Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
}
