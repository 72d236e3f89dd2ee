/// Unpredictable names for temporary files, so another user cannot plant
/// something under the name qlab is about to create.
package enum RandomName {
    /// `count` random bytes as lowercase hex, from `SystemRandomNumberGenerator`
    /// (the Swift runtime's `getrandom(2)` on Linux; Glibc's module does not
    /// import `<sys/random.h>`).
    package static func hex(bytes count: Int = 12) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in
            let byte = UInt8.random(in: 0...255, using: &generator)
            return String(byte >> 4, radix: 16) + String(byte & 0xF, radix: 16)
        }.joined()
    }

    /// `.NAME.tmp-RANDOM`: a hidden temporary name beside `name`.
    package static func temporary(for name: String) -> String {
        "." + name + ".tmp-" + hex()
    }
}
