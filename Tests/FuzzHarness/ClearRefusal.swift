import VDiskCore

extension FuzzHarness {
  /// What is wrong with how an input was refused, or nil when it opened or was refused the way
  /// every bad image must be: with one `VDiskError` that names the image (the harness's paths
  /// all start with /nonexistent/) and says what is wrong. The fuzz targets trap on an answer
  /// (a finding, like a sanitizer report); the regression replay expects none.
  public static func unclear(_ error: (any Error)?) -> String? {
    guard let error else { return nil }
    guard let refusal = error as? VDiskError else {
      return "refused with \(type(of: error)), not a VDiskError: \(error)"
    }
    guard refusal.path.hasPrefix("/nonexistent/") else {
      return "the error names \(refusal.path), not the image: \(refusal)"
    }
    return refusal.detail.isEmpty ? "the error says nothing: \(refusal)" : nil
  }

  /// Traps on an unclear refusal (`unclear`), for the fuzz targets' entry points.
  public static func requireClear(_ error: (any Error)?) -> Int32 {
    if let why = unclear(error) { fatalError(why) }
    return 0
  }
}
