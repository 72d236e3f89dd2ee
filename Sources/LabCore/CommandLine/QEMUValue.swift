import QMP

/// A QEMU property value. Typed, because the same property goes to QEMU two
/// ways: on the command line everything is text (`rombar=0`, `x-no-kvm-intx=on`),
/// while QMP's device_add takes JSON and checks types (`"rombar": 0`).
public enum QEMUValue: Sendable, Hashable, CustomStringConvertible {
    case string(String)
    case int(Int64)
    case bool(Bool)

    /// The value as the command line spells it (not yet escaped).
    public var description: String {
        switch self {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .bool(let b): return b ? "on" : "off"
        }
    }

    public var json: JSONValue {
        switch self {
        case .string(let s): return .string(s)
        case .int(let i): return .int(i)
        case .bool(let b): return .bool(b)
        }
    }

    /// A value from a lab file, typed the way QEMU's properties usually are:
    /// on/off/true/false are booleans, decimal and `0x` hex numbers integers, anything else text.
    public static func inferred(_ text: String) -> QEMUValue {
        switch text.lowercased() {
        case "on", "true", "yes": return .bool(true)
        case "off", "false", "no": return .bool(false)
        default: break
        }
        if let number = Int64(text), String(number) == text { return .int(number) }
        // QMP checks types: `x-pci-sub-vendor-id: 0x9004` must reach device_add as a number.
        if text.hasPrefix("0x") || text.hasPrefix("0X"), text.count > 2, let number = Int64(text.dropFirst(2), radix: 16) {
            return .int(number)
        }
        return .string(text)
    }
}
