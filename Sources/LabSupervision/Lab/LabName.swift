/// Lab and guest names: `[a-z0-9][a-z0-9-]*`, at most 64 characters (they name directories and sockets).
public enum LabName {
    public static func isValid(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.unicodeScalars.count <= 64 else { return false }
        func ok(_ c: Unicode.Scalar) -> Bool { ("a"..."z").contains(c) || ("0"..."9").contains(c) }
        return ok(first) && name.unicodeScalars.allSatisfy { ok($0) || $0 == "-" }
    }
}
