/// A problem in a lab file, located by file, line, column and key path
/// (`devices.scsi0.passthrough.host`), with a message that says what to do.
///
/// Its description reads `FILE:LINE:COL: KEY: message`, the form editors and
/// CI logs link to.
public struct LabFileError: Error, Sendable, Hashable, CustomStringConvertible {
    public var file: String
    /// 1-based; nil when the problem is not at one place (e.g. the file cannot be read).
    public var line: Int?
    public var column: Int?
    /// Dotted path of the key, empty for the whole file.
    public var keyPath: String
    public var message: String

    public init(file: String, line: Int? = nil, column: Int? = nil, keyPath: String = "", message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.keyPath = keyPath
        self.message = message
    }

    public var description: String {
        var text = file
        if let line {
            text += ":\(line)"
            if let column { text += ":\(column)" }
        }
        text += ": "
        if !keyPath.isEmpty { text += keyPath + ": " }
        return text + message
    }
}

extension LabFileError: ExitStatusCarrying {
    /// Bad input: the lab file says what to fix.
    public var exitStatus: ExitStatus { .usage }
}
