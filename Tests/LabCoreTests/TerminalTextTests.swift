import LabCore
import Testing

@Suite("Terminal text neutralisation")
struct TerminalTextTests {
    @Test func plainTextIsUnchanged() {
        #expect(TerminalText.neutralised("hello, wörld\n\tindented\n") == "hello, wörld\n\tindented\n")
        #expect(TerminalText.neutralised("a\\x1b stays as typed") == "a\\x1b stays as typed")
    }

    @Test func escapeSequencesAreShownEscaped() {
        // CSI: clear the screen, move the cursor home.
        #expect(TerminalText.neutralised("\u{1B}[2J\u{1B}[Hgone") == "\\x1b[2J\\x1b[Hgone")
        // OSC: set the window title, ended by BEL or by ST (ESC \).
        #expect(TerminalText.neutralised("\u{1B}]0;pwned\u{7}") == "\\x1b]0;pwned\\x07")
        #expect(TerminalText.neutralised("\u{1B}]52;c;AAAA\u{1B}\\") == "\\x1b]52;c;AAAA\\x1b\\")
        // Backspace and a lone carriage return rewrite what is shown; NUL, DEL.
        #expect(TerminalText.neutralised("ok\u{8}\u{8}no") == "ok\\x08\\x08no")
        #expect(TerminalText.neutralised("safe\rEVIL") == "safe\\rEVIL")
        #expect(TerminalText.neutralised("a\u{0}b\u{7F}c") == "a\\x00b\\u007fc")
    }

    @Test func lineStructureIsKeptOrEscaped() {
        // CRLF reads as a line end; line feeds and tabs are kept for multi-line text.
        #expect(TerminalText.neutralised("one\r\ntwo\tcols\r") == "one\ntwo\tcols\\r")
        #expect(TerminalText.neutralised("one\ntwo\tcols", keepingLines: false) == "one\\ntwo\\tcols")
        #expect(TerminalText.neutralised("one\r\n", keepingLines: false) == "one\\r\\n")
    }

    @Test func c1ControlsAndBidiOverridesAreEscaped() {
        // U+009B is a one-character CSI on terminals that honour C1 controls.
        #expect(TerminalText.neutralised("\u{9B}2J") == "\\u009b2J")
        #expect(TerminalText.neutralised("\u{80}\u{85}\u{9F}\u{A0}") == "\\u0080\\u0085\\u009f\u{A0}")
        #expect(TerminalText.neutralised("abc\u{202E}fed") == "abc\\u202efed")
        // Escaped this way, JSON stays JSON with the same meaning.
        #expect(TerminalText.neutralised(#"{"desc": "x"#.appending("\u{9B}\"}")) == #"{"desc": "x\u009b"}"#)
    }

    @Test func invalidUTF8IsShownByteByByte() {
        #expect(TerminalText.neutralised([0x61, 0xFF, 0x62, 0xC3, 0x28, 0x0A]) == "a\\xffb\\xc3(\n")
        // A C1 control encoded as UTF-8 (0xC2 0x9B) and a raw 0x9B byte.
        #expect(TerminalText.neutralised([0xC2, 0x9B, 0x9B]) == "\\u009b\\x9b")
        #expect(TerminalText.neutralised(Array("plain\n".utf8)) == "plain\n")
        // Truncated sequence at the end.
        #expect(TerminalText.neutralised([0x41, 0xE2, 0x82]) == "A\\xe2\\x82")
    }
}
