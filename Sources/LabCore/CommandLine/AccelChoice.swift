import Platform

extension AccelDecision {
    /// Decides `machine.accel`.
    ///
    /// `auto` uses KVM only where it can run a stock guest: `/dev/kvm` exists
    /// and this user can open it read-write (`access(2)`), and it is not
    /// kvm_pvm (`/sys/module/kvm_pvm`), a paravirtual KVM that runs only
    /// PVM-aware kernels: a stock kernel hangs early in boot. Otherwise TCG.
    /// `kvm` and `tcg` are taken as asked (with the same checks in the reason).
    ///
    /// - Parameters:
    ///   - devRoot: where `kvm` is looked for (tests pass a temp directory).
    ///   - sysRoot: where `module/kvm_pvm` is looked for.
    public static func decide(_ mode: AccelMode, devRoot: String = "/dev", sysRoot: String = "/sys") -> AccelDecision {
        let device = devRoot + "/kvm"
        let pvm = sysRoot + "/module/kvm_pvm"
        let exists = FileStatus.following(device) != nil
        let accessible = exists && HostFiles.canReadWrite(device)
        let isPVM = FileStatus.following(pvm) != nil
        switch mode {
        case .tcg:
            return AccelDecision(.tcg, reason: "machine.accel is tcg")
        case .kvm:
            if !exists { return AccelDecision(.kvm, reason: "machine.accel is kvm, but \(device) does not exist: QEMU will fail") }
            if !accessible { return AccelDecision(.kvm, reason: "machine.accel is kvm, but \(device) is not readable and writable by this user: QEMU will fail") }
            if isPVM { return AccelDecision(.kvm, reason: "machine.accel is kvm, but this KVM is kvm_pvm: only PVM-aware guest kernels boot") }
            return AccelDecision(.kvm, reason: "machine.accel is kvm")
        case .auto:
            if !exists { return AccelDecision(.tcg, reason: "\(device) does not exist (no KVM module, or no VT-x/AMD-V)") }
            if !accessible {
                return AccelDecision(.tcg, reason: "\(device) is not readable and writable by this user (add the user to the kvm group)")
            }
            if isPVM {
                return AccelDecision(.tcg, reason: "KVM here is kvm_pvm (\(pvm)), which runs only PVM-aware kernels; stock guests hang")
            }
            return AccelDecision(.kvm, reason: "\(device) is usable")
        }
    }
}
