extension Duration {
    /// The duration in seconds, as a Double (for messages, reports and figures).
    public var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
