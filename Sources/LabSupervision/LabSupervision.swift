/// LabSupervision: what a lab's supervisor process needs (the supervisor,
/// launch spec and records, runtime and state directories, child processes,
/// the owner pipe, QEMU log diagnosis). It must not import Foundation:
/// `qlab-supervisor` links only this and QMP, so it stays small.
public enum LabSupervision {}
