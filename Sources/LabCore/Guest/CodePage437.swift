/// Code page 437, the character set of a VGA's text mode (and of the fonts
/// in its ROM), to Unicode: what `qlab screen --text` prints. 0x00 is a
/// blank cell; 0x01-0x1F and 0x7F are the glyphs a VGA draws for them
/// (smileys, arrows), not control characters, so no byte of the screen can
/// reach a terminal as a control sequence.
public enum CodePage437 {
    /// 256 characters, one per byte value.
    public static let characters: [Character] = [
        " ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼",
        " !\"#$%&'()*+,-./0123456789:;<=>?",
        "@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_",
        "`abcdefghijklmnopqrstuvwxyz{|}~⌂",
        "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒ",
        "áíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐",
        "└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀",
        "αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■ ",
    ].flatMap { Array($0) }

    /// `bytes` as text, one character per byte.
    public static func decode<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
        String(bytes.map { characters[Int($0)] })
    }
}
