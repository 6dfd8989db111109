//! CPU features as wasmtime and Rust name them, decoded from CPUID and
//! XCR0. The agent decodes the CPU it runs on to answer wasmtime's check
//! of an artifact; the host decodes the CPUID it gives the vCPU, with the
//! XCR0 it sets, and compiles only for what the agent will find. One
//! decoder, so the two cannot disagree.
//!
//! On hardware KVM (and on PVM hosts with CPUID faulting) the guest's
//! `cpuid` answers from the CPUID the host set, which may offer much less
//! than the host CPU has.

/// The features [`feature`] decodes.
pub const FEATURES: &[&str] = &[
    "sse2",
    "sse3",
    "ssse3",
    "sse4.1",
    "sse4.2",
    "popcnt",
    "cmpxchg16b",
    "xsave",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avxvnni",
    "bmi1",
    "bmi2",
    "lzcnt",
    "avx512f",
    "avx512dq",
    "avx512vl",
    "avx512bw",
    "avx512vbmi",
    "avx512vnni",
    "avx512bitalg",
];

/// Whether `name` is usable on a CPU whose `cpuid(leaf, subleaf)` answers
/// `[eax, ebx, ecx, edx]`, with `xcr0` the enabled XSAVE state (`None`: the
/// OS enabled no XSAVE, so nothing that needs AVX state is usable). `None`
/// for a name not in [`FEATURES`].
pub fn feature(
    name: &str,
    cpuid: &dyn Fn(u32, u32) -> [u32; 4],
    xcr0: Option<u64>,
) -> Option<bool> {
    let [max_leaf, ..] = cpuid(0, 0);
    let [_, _, ecx1, edx1] = cpuid(1, 0);
    let leaf7 = |sub| if max_leaf >= 7 { cpuid(7, sub) } else { [0; 4] };
    let [_, ebx7, ecx7, _] = leaf7(0);
    let [eax7_1, ..] = leaf7(1);
    let [max_ext, ..] = cpuid(0x8000_0000, 0);
    let [_, _, ecx_ext, _] = if max_ext >= 0x8000_0001 {
        cpuid(0x8000_0001, 0)
    } else {
        [0; 4]
    };
    let bit = |reg: u32, n: u32| reg & (1 << n) != 0;

    // XCR0 bits 1-2 (SSE, AVX) and 5-7 (opmask, ZMM).
    let xcr0 = xcr0.unwrap_or(0);
    let avx_os = xcr0 & 0b110 == 0b110;
    let avx512_os = avx_os && xcr0 & 0b1110_0000 == 0b1110_0000;

    Some(match name {
        "sse2" => bit(edx1, 26),
        "sse3" => bit(ecx1, 0),
        "ssse3" => bit(ecx1, 9),
        "fma" => bit(ecx1, 12) && avx_os,
        "cmpxchg16b" => bit(ecx1, 13),
        "sse4.1" => bit(ecx1, 19),
        "sse4.2" => bit(ecx1, 20),
        "popcnt" => bit(ecx1, 23),
        "xsave" => bit(ecx1, 26),
        "avx" => bit(ecx1, 28) && avx_os,
        "f16c" => bit(ecx1, 29) && avx_os,
        "bmi1" => bit(ebx7, 3),
        "avx2" => bit(ebx7, 5) && avx_os,
        "bmi2" => bit(ebx7, 8),
        "avx512f" => bit(ebx7, 16) && avx512_os,
        "avx512dq" => bit(ebx7, 17) && avx512_os,
        "avx512bw" => bit(ebx7, 30) && avx512_os,
        "avx512vl" => bit(ebx7, 31) && avx512_os,
        "avx512vbmi" => bit(ecx7, 1) && avx512_os,
        "avx512vnni" => bit(ecx7, 11) && avx512_os,
        "avx512bitalg" => bit(ecx7, 12) && avx512_os,
        "avxvnni" => bit(eax7_1, 4) && avx_os,
        "lzcnt" => bit(ecx_ext, 5),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A CPU with SSE4.2, POPCNT, XSAVE, AVX, AVX2 and LZCNT.
    fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
        match (leaf, sub) {
            (0, 0) => [7, 0, 0, 0],
            (1, 0) => [0, 0, (1 << 20) | (1 << 23) | (1 << 26) | (1 << 28), 1 << 26],
            (7, 0) => [0, 1 << 5, 0, 0],
            (0x8000_0000, 0) => [0x8000_0001, 0, 0, 0],
            (0x8000_0001, 0) => [0, 0, 1 << 5, 0],
            _ => [0; 4],
        }
    }

    fn usable(xcr0: Option<u64>) -> Vec<&'static str> {
        FEATURES
            .iter()
            .copied()
            .filter(|f| feature(f, &cpuid, xcr0) == Some(true))
            .collect()
    }

    #[test]
    fn avx_needs_the_os_to_enable_its_state() {
        assert_eq!(
            usable(Some(0b111)),
            ["sse2", "sse4.2", "popcnt", "xsave", "avx", "avx2", "lzcnt"]
        );
        assert_eq!(usable(None), ["sse2", "sse4.2", "popcnt", "xsave", "lzcnt"]);
        assert_eq!(feature("avx512f", &cpuid, Some(0xe7)), Some(false));
        assert_eq!(feature("sse5", &cpuid, None), None);
    }
}
