extension String {
  /// Text from UTF-16 code units stored in `order` in `bytes` (an odd trailing byte is ignored;
  /// unpaired surrogates become U+FFFD). With `upToNUL`, the text ends at the first NUL unit, as
  /// fixed-size name fields are padded (VHD parent name, GPT partition name).
  public init(utf16 bytes: ArraySlice<UInt8>, order: ByteOrder, upToNUL: Bool = true) {
    var units = bytes.withUnsafeBytes { [UInt16](decoding: $0, order: order) }
    if upToNUL, let nul = units.firstIndex(of: 0) { units.removeSubrange(nul...) }
    self = String(decoding: units, as: UTF16.self)
  }
}
