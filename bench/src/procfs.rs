//! Memory figures from `/proc`, as the benchmarks and tests read them.

/// A `Name:  value kB` field of a `/proc` file's text (`/proc/meminfo`,
/// `/proc/<pid>/status`, `smaps_rollup`), in KiB.
pub fn proc_kib(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}
