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

fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = __cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only executed when CPUID reports OSXSAVE, so xgetbv is enabled.
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Answers wasmtime's `detect_host_feature` probe with the decoder the host
/// compiles by ([`wisp_abi::cpu`]); feature names are the Rust standard
/// library's.
pub fn detect_feature(feature: &str) -> Option<bool> {
    let [_, _, ecx1, _] = cpuid(1, 0);
    let osxsave = ecx1 & (1 << 27) != 0;
    wisp_abi::cpu::feature(feature, &cpuid, osxsave.then(xcr0))
}

/// Converts TSC ticks to nanoseconds given the host-measured frequency.
pub fn ticks_to_ns(ticks: u64, tsc_khz: u64) -> u64 {
    if tsc_khz == 0 {
        return 0;
    }
    (u128::from(ticks) * 1_000_000 / u128::from(tsc_khz)) as u64
}
