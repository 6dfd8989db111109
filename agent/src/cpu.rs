//! CPU feature probing and the time-stamp counter.
//!
//! wasmtime checks that every ISA extension the host compiler used is present
//! before it runs an artifact; with no OS to ask, the agent answers from
//! `cpuid` and `xgetbv` (the host set XCR0, so the OS-support bits are real).

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, _rdtsc};

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc is allowed at ring 3 (the host leaves CR4.TSD clear).
    unsafe { _rdtsc() }
}

fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = __cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only executed when CPUID reports OSXSAVE, so xgetbv is enabled.
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Answers wasmtime's `detect_host_feature` probe; feature names are the
/// Rust standard library's.
pub fn detect_feature(feature: &str) -> Option<bool> {
    let (max_leaf, ..) = cpuid(0, 0);
    let (_, _, ecx1, _) = cpuid(1, 0);
    let (_, ebx7, ecx7, _) = if max_leaf >= 7 {
        cpuid(7, 0)
    } else {
        (0, 0, 0, 0)
    };
    let (eax7_1, ..) = if max_leaf >= 7 {
        cpuid(7, 1)
    } else {
        (0, 0, 0, 0)
    };
    let (max_ext, ..) = cpuid(0x8000_0000, 0);
    let (_, _, ecx_ext, _) = if max_ext >= 0x8000_0001 {
        cpuid(0x8000_0001, 0)
    } else {
        (0, 0, 0, 0)
    };
    let bit = |reg: u32, n: u32| reg & (1 << n) != 0;

    let xcr0 = if bit(ecx1, 27) { xcr0() } else { 0 };
    let avx_os = xcr0 & 0b110 == 0b110;
    let avx512_os = avx_os && xcr0 & 0b1110_0000 == 0b1110_0000;

    Some(match feature {
        "sse3" => bit(ecx1, 0),
        "ssse3" => bit(ecx1, 9),
        "fma" => bit(ecx1, 12) && avx_os,
        "cmpxchg16b" => bit(ecx1, 13),
        "sse4.1" => bit(ecx1, 19),
        "sse4.2" => bit(ecx1, 20),
        "popcnt" => bit(ecx1, 23),
        "avx" => bit(ecx1, 28) && avx_os,
        "bmi1" => bit(ebx7, 3),
        "avx2" => bit(ebx7, 5) && avx_os,
        "bmi2" => bit(ebx7, 8),
        "avx512f" => bit(ebx7, 16) && avx512_os,
        "avx512dq" => bit(ebx7, 17) && avx512_os,
        "avx512vl" => bit(ebx7, 31) && avx512_os,
        "avx512vbmi" => bit(ecx7, 1) && avx512_os,
        "avx512vnni" => bit(ecx7, 11) && avx512_os,
        "avx512bitalg" => bit(ecx7, 12) && avx512_os,
        "avxvnni" => bit(eax7_1, 4) && avx_os,
        "lzcnt" => bit(ecx_ext, 5),
        _ => return None,
    })
}

/// Converts TSC ticks to nanoseconds given the host-measured frequency.
pub fn ticks_to_ns(ticks: u64, tsc_khz: u64) -> u64 {
    if tsc_khz == 0 {
        return 0;
    }
    (u128::from(ticks) * 1_000_000 / u128::from(tsc_khz)) as u64
}
