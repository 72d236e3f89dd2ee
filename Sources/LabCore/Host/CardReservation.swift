import Platform

/// The host cards a lab has while it runs: one ``CardLock`` per card and per
/// other member of its IOMMU group (vfio gives a group to one QEMU at a time, so
/// two labs cannot use two cards of one group at once). Taken by `qlab up` and
/// `qlab run` before anything starts; `up` hands the descriptors to the lab's
/// supervisor, so the cards stay reserved as long as the lab runs and are free
/// again when its last holder ends, however it ends (docs/cards.md).
public final class CardReservation: Sendable {
    /// The cards the lab named, resolved.
    public let cards: [PCIAddress]
    /// Every lock held: the cards and their groups' other members (bridges left out).
    public let locks: [CardLock]
    public let lab: String

    /// The descriptors a process that keeps the cards (the supervisor) inherits.
    public var descriptors: [Int32] { locks.map(\.descriptor) }

    init(cards: [PCIAddress], locks: [CardLock], lab: String, groupCards: [String: String]) {
        self.cards = cards
        self.locks = locks
        self.lab = lab
        self.groupCards = groupCards
    }

    /// Writes who holds the cards (this process, or the supervisor that inherited them).
    public func recordHolder(command: String, pid: Int32, since: Double = wallClockSeconds()) {
        for lock in locks {
            lock.record(CardHolder(lab: lab, card: namedCards[lock.address] ?? lock.address, command: command, pid: pid, since: since))
        }
    }

    /// For each lock, the card the lab named that brought it in (itself, or a card of its group).
    var namedCards: [String: String] {
        var named: [String: String] = [:]
        for card in cards.reversed() { named[card.description] = card.description }
        return named.merging(groupCards) { own, _ in own }
    }

    let groupCards: [String: String]

    /// The lock addresses for `cards`: each card and the other members of its
    /// IOMMU group that are not bridges, sorted and once each, with the card that brought each in.
    public static func lockAddresses(for cards: [PCIAddress], sysfs: Sysfs) -> [(lock: PCIAddress, card: PCIAddress)] {
        var found: [PCIAddress: PCIAddress] = [:]
        for card in cards { found[card] = card }
        for card in cards {
            guard let group = sysfs.device(card)?.iommuGroup else { continue }
            for member in sysfs.groupMembers(group) where found[member] == nil {
                guard let device = sysfs.device(member), !device.isBridge, device.baseClass != 0x06 else { continue }
                found[member] = card
            }
        }
        return found.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// How long a command without `--wait` still tries: a `qlab cards` probe
    /// holds a card's file for an instant, which must not read as busy.
    static let grace: Duration = .milliseconds(500)

    /// Takes every lock for `cards`, all or none. Without `wait` a card held by
    /// another lab is ``LabError/cardBusy(card:holder:)`` (exit 4), naming the
    /// holder; with it, this waits (telling `onWait` who holds the card, once,
    /// then on each change) up to the duration (nil duration: no limit), then
    /// ``LabError/waitTimedOut(what:holder:seconds:)`` (exit 124). Cancellation ends the wait.
    public static func take(
        cards: [PCIAddress], lab: String, roots: HostRoots, environment: [String: String], wait: WaitPolicy = .no,
        command: String = LabOwner.commandText(CommandLine.arguments), onWait: @Sendable (String) -> Void = { _ in }
    ) async throws -> CardReservation? {
        guard !cards.isEmpty else { return nil }
        let planned = lockAddresses(for: cards, sysfs: Sysfs(roots: roots))
        let addresses = planned.map(\.lock.description)
        let groupCards = Dictionary(planned.map { ($0.lock.description, $0.card.description) }) { first, _ in first }
        guard let directory = try CardLockDirectory.open(environment: environment, create: true) else {
            throw LabError.system("cannot create \(CardLockDirectory.path(environment: environment, uid: ThisProcess.effectiveUserID))")
        }
        let start = ContinuousClock.now
        var told: String?
        while true {
            var taken: [CardLock] = []
            var busy: String?
            for address in addresses {
                guard let lock = try CardLock.tryTake(address, in: directory) else {
                    busy = address
                    break
                }
                taken.append(lock)
            }
            guard let busyAddress = busy else {
                let reservation = CardReservation(cards: cards, locks: taken, lab: lab, groupCards: groupCards)
                reservation.recordHolder(command: command, pid: ThisProcess.id)
                return reservation
            }
            taken.removeAll()
            let holder = holderText(busyAddress, in: directory)
            // A group member the lab did not name: say which of its cards brought it in.
            let named = groupCards[busyAddress] ?? busyAddress
            let busyCard = named == busyAddress ? busyAddress : "\(busyAddress) (in the IOMMU group of card \(named), which this lab passes through)"
            let waited = ContinuousClock.now - start
            switch wait {
            case .no:
                if waited >= grace { throw LabError.cardBusy(card: busyCard, holder: holder) }
            case .upTo(let limit):
                if let limit, waited >= limit {
                    throw LabError.waitTimedOut(what: "card \(busyCard)", holder: holder, seconds: Double(limit.components.seconds))
                }
                if told != holder {
                    onWait("waiting for card \(busyCard): reserved by \(holder)")
                    told = holder
                }
            }
            // flock(2) has no descriptor to wait on, and a blocking flock could not honour a deadline or cancellation.
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Who holds a card, for a message: the recorded holder, or what is known without one.
    static func holderText(_ address: String, in directory: PrivateDirectory) -> String {
        switch CardLock.holder(of: address, in: directory) {
        case .none: return "another lab (released just now)"
        case .some(.none): return "another qlab command (no holder recorded yet)"
        case .some(.some(let holder)):
            return holder.description + (holder.card == address ? "" : " for card \(holder.card) of the same IOMMU group")
        }
    }
}

/// `--wait [DURATION]`: whether a command waits for a card or lab another holds, and how long.
public enum WaitPolicy: Sendable, Hashable {
    /// Busy is an error (exit 4).
    case no
    /// Wait; nil: as long as it takes.
    case upTo(Duration?)
}
