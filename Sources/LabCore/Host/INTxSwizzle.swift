/// How bridges route a card's interrupt pin.
///
/// A PCI-to-PCI bridge maps the pin of a device in slot `s` on its secondary
/// bus to its own pin `((pin-1)+s)%4+1` (the PCI-to-PCI Bridge spec's
/// swizzle), once per bridge level, so moving a card to another slot moves
/// it to another INTx line of the bridge and, through the firmware's routing,
/// usually to another host IRQ.
public enum INTxSwizzle {
    /// The pin a device's `pin` (1...4) in `slot` arrives as on the bridge above.
    public static func swizzle(pin: UInt8, slot: UInt8) -> UInt8 {
        guard (1...4).contains(pin) else { return 0 }
        return UInt8((Int(pin) - 1 + Int(slot)) % 4 + 1)
    }

    /// The pin at the root bus after every bridge level, given the slots on the
    /// path from the device (first) up to the bridge nearest the root (last).
    public static func pinAtRoot(pin: UInt8, slots: [UInt8]) -> UInt8 {
        slots.reduce(pin) { swizzle(pin: $0, slot: $1) }
    }

    /// The slots 0...31 of a bus grouped by the pin a device with `pin` in that
    /// slot presents to the bridge above: [bridge pin: slots].
    public static func slotsByBridgePin(pin: UInt8) -> [UInt8: [UInt8]] {
        var result: [UInt8: [UInt8]] = [:]
        for slot in UInt8(0)..<32 { result[swizzle(pin: pin, slot: slot), default: []].append(slot) }
        return result
    }
}
