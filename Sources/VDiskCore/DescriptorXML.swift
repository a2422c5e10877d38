/// An XML element as `DescriptorXML` reads it: name, attributes, child elements and the text
/// directly inside it.
public struct XMLElement: Sendable {
  public var name: String
  public var attributes: [String: String] = [:]
  public var children: [XMLElement] = []
  public var text = ""

  public init(name: String) { self.name = name }

  /// The first child called `name`.
  public func child(_ name: String) -> XMLElement? { children.first { $0.name == name } }

  /// Every child called `name`.
  public func children(_ name: String) -> [XMLElement] { children.filter { $0.name == name } }

  /// The trimmed text of the first child called `name`.
  public func value(_ name: String) -> String? { child(name).map { $0.text.trimmingWhitespace } }
}

/// A small, strict XML reader for disk descriptors (Parallels' DiskDescriptor.xml, a DMG's property
/// list, OVF): elements,
/// attributes, text, comments, processing instructions and CDATA; the five predefined entities
/// and character references. A document type declaration is refused, so no entity can expand
/// (no "billion laughs"); so are documents larger than `maxBytes`, nested deeper than
/// `maxDepth` or with more than `maxElements` elements. Nothing recurses: a deep document cannot
/// exhaust the stack.
public enum DescriptorXML {
  public static let maxBytes = 1 << 20
  public static let maxDepth = 32
  public static let maxElements = 100_000

  /// The document's root element; throws `.corrupt` naming `path` and the byte offset at fault.
  ///
  /// `maxBytes`, `maxDepth` and `maxElements` default to the limits above; a caller whose
  /// documents are larger (a DMG property list) passes its own. `what` names the document in
  /// errors ("DMG property list", "OVF descriptor").
  public static func parse(
    _ bytes: [UInt8], path: String, what: String = "XML descriptor", maxBytes: Int = maxBytes,
    maxDepth: Int = maxDepth, maxElements: Int = maxElements
  ) throws -> XMLElement {
    guard bytes.count <= maxBytes else {
      throw VDiskError.corrupt(
        path, "\(what) of \(bytes.count) bytes is larger than \(maxBytes >> 20) MiB")
    }
    var reader = Reader(bytes: bytes, path: path, what: what, maxDepth: maxDepth, maxElements: maxElements)
    return try reader.document()
  }

  private struct Reader {
    let bytes: [UInt8]
    let path: String
    let what: String
    let maxDepth: Int
    let maxElements: Int
    var position = 0
    var elements = 0

    init(bytes: [UInt8], path: String, what: String, maxDepth: Int, maxElements: Int) {
      self.bytes = bytes
      self.path = path
      self.what = what
      self.maxDepth = maxDepth
      self.maxElements = maxElements
      if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { position = 3 }  // a UTF-8 byte order mark
    }

    func fail(_ detail: String) -> VDiskError {
      VDiskError.corrupt(path, at: UInt64(position), "\(what) at byte \(position): \(detail)")
    }

    func starts(_ text: String) -> Bool {
      let utf8 = Array(text.utf8)
      return position + utf8.count <= bytes.count && Array(bytes[position..<position + utf8.count]) == utf8
    }

    /// Moves past `terminator`, or fails naming `what`.
    mutating func skip(past terminator: String, _ what: String) throws {
      let utf8 = Array(terminator.utf8)
      while position + utf8.count <= bytes.count {
        if bytes[position] == utf8[0], Array(bytes[position..<position + utf8.count]) == utf8 {
          position += utf8.count
          return
        }
        position += 1
      }
      throw fail("unterminated \(what)")
    }

    mutating func skipSpace() {
      while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) { position += 1 }
    }

    /// Comments, processing instructions and white space between markup; fails on a DOCTYPE.
    mutating func skipMisc() throws {
      while true {
        skipSpace()
        if starts("<!--") {
          try skip(past: "-->", "comment")
        } else if starts("<?") {
          try skip(past: "?>", "processing instruction")
        } else if starts("<!DOCTYPE") || starts("<!ENTITY") {
          throw fail("document type declarations are not allowed")
        } else {
          return
        }
      }
    }

    static func isNameByte(_ b: UInt8) -> Bool {
      b >= 0x80 || (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
        || b == 0x5F || b == 0x2D || b == 0x2E || b == 0x3A
    }

    mutating func name() throws -> String {
      let start = position
      while position < bytes.count, Self.isNameByte(bytes[position]) { position += 1 }
      guard position > start else { throw fail("expected a name") }
      return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    /// Text up to `end` (exclusive) with entities and character references replaced.
    func decode(_ start: Int, _ end: Int) throws -> String {
      var out: [UInt8] = []
      var i = start
      while i < end {
        guard bytes[i] == 0x26 else {  // '&'
          out.append(bytes[i])
          i += 1
          continue
        }
        guard let semicolon = bytes[i..<min(end, i + 12)].firstIndex(of: 0x3B) else {
          throw VDiskError.corrupt(path, at: UInt64(i), "\(what) at byte \(i): unterminated entity")
        }
        let entity = String(decoding: bytes[(i + 1)..<semicolon], as: UTF8.self)
        switch entity {
        case "lt": out.append(0x3C)
        case "gt": out.append(0x3E)
        case "amp": out.append(0x26)
        case "quot": out.append(0x22)
        case "apos": out.append(0x27)
        default:
          let number: UInt32? =
            entity.hasPrefix("#x")
            ? UInt32(entity.dropFirst(2), radix: 16)
            : entity.hasPrefix("#") ? UInt32(entity.dropFirst(), radix: 10) : nil
          guard let number, let scalar = Unicode.Scalar(number) else {
            throw VDiskError.corrupt(
              path, at: UInt64(i), "\(what) at byte \(i): unknown entity &\(entity);")
          }
          out += Array(String(Character(scalar)).utf8)
        }
        i = semicolon + 1
      }
      return String(decoding: out, as: UTF8.self)
    }

    mutating func document() throws -> XMLElement {
      try skipMisc()
      guard starts("<") else { throw fail("no root element") }
      // Open elements, innermost last; an element moves into its parent when it closes.
      var open: [XMLElement] = []
      var root: XMLElement?
      while root == nil {
        guard position < bytes.count else { throw fail("document ends inside <\(open.last?.name ?? "")>") }
        if starts("<!--") {
          try skip(past: "-->", "comment")
        } else if starts("<![CDATA[") {
          let start = position + 9
          try skip(past: "]]>", "CDATA section")
          if !open.isEmpty {
            open[open.count - 1].text += String(decoding: bytes[start..<(position - 3)], as: UTF8.self)
          }
        } else if starts("<?") {
          try skip(past: "?>", "processing instruction")
        } else if starts("<!") {
          throw fail("declarations are not allowed")
        } else if starts("</") {
          position += 2
          let name = try name()
          skipSpace()
          guard position < bytes.count, bytes[position] == 0x3E else { throw fail("expected '>'") }
          position += 1
          guard let element = open.popLast(), element.name == name else {
            throw fail("</\(name)> does not close <\(open.last?.name ?? "")>")
          }
          if open.isEmpty { root = element } else { open[open.count - 1].children.append(element) }
        } else if starts("<") {
          position += 1
          elements += 1
          guard elements <= maxElements else {
            throw fail("more than \(maxElements) elements")
          }
          guard open.count < maxDepth else {
            throw fail("elements nested deeper than \(maxDepth)")
          }
          var element = XMLElement(name: try name())
          var selfClosing = false
          while true {
            skipSpace()
            guard position < bytes.count else { throw fail("unterminated tag <\(element.name)>") }
            if bytes[position] == 0x3E {
              position += 1
              break
            }
            if starts("/>") {
              position += 2
              selfClosing = true
              break
            }
            let attribute = try name()
            skipSpace()
            guard position < bytes.count, bytes[position] == 0x3D else {
              throw fail("expected '=' after \(attribute)")
            }
            position += 1
            skipSpace()
            guard position < bytes.count, bytes[position] == 0x22 || bytes[position] == 0x27 else {
              throw fail("expected a quoted value for \(attribute)")
            }
            let quote = bytes[position]
            let start = position + 1
            guard let end = bytes[start...].firstIndex(of: quote) else {
              throw fail("unterminated value of \(attribute)")
            }
            element.attributes[attribute] = try decode(start, end)
            position = end + 1
          }
          if selfClosing {
            if open.isEmpty { root = element } else { open[open.count - 1].children.append(element) }
          } else {
            open.append(element)
          }
        } else {
          let start = position
          while position < bytes.count, bytes[position] != 0x3C { position += 1 }
          let text = try decode(start, position)
          if open.isEmpty {
            guard text.trimmingWhitespace.isEmpty else { throw fail("text outside the root element") }
          } else {
            open[open.count - 1].text += text
          }
        }
      }
      try skipMisc()
      guard position == bytes.count else { throw fail("content after the root element") }
      guard let root else { throw fail("no root element") }
      return root
    }
  }
}

extension String {
  /// The string without leading and trailing spaces, tabs and line breaks.
  public var trimmingWhitespace: String {
    let space: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" || $0 == "\r\n" }
    guard let first = firstIndex(where: { !space($0) }), let last = lastIndex(where: { !space($0) }) else {
      return ""
    }
    return String(self[first...last])
  }
}
