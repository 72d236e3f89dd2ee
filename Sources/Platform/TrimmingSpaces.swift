extension String {
    /// Without leading and trailing whitespace (Foundation-free).
    package func trimmingSpaces() -> String {
        var s = Substring(self)
        while let first = s.first, first.isWhitespace { s = s.dropFirst() }
        while let last = s.last, last.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
