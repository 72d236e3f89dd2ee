/// `O_PATH` (Linux: a descriptor that names a directory for `*at` calls and
/// `fstat(2)` without needing read permission). Glibc defines it through
/// `__O_PATH`, which Swift does not import.
package let O_PATH: Int32 = 0o10000000
