//! The process-wide `/dev/kvm` handle and facts about the host that never
//! change, each queried once.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use kvm_ioctls::{Kvm, VcpuFd};
use wisp_snapshot::CpuFeatures;

use crate::error::{Error, Result};

/// The shared `/dev/kvm` handle.
pub fn kvm() -> Result<&'static Kvm> {
    static KVM: OnceLock<Kvm> = OnceLock::new();
    if let Some(k) = KVM.get() {
        return Ok(k);
    }
    let k = Kvm::new().map_err(Error::KvmUnavailable)?;
    let k = KVM.get_or_init(|| k);
    // Asked now, with the handle: the invocation seccomp filter allows no
    // KVM_CHECK_EXTENSION later.
    SYNC_REGS.get_or_init(|| k.check_extension(kvm_ioctls::Cap::SyncRegs));
    READONLY_MEM.get_or_init(|| k.check_extension(kvm_ioctls::Cap::ReadonlyMem));
    Ok(k)
}

static SYNC_REGS: OnceLock<bool> = OnceLock::new();
static READONLY_MEM: OnceLock<bool> = OnceLock::new();

/// Whether KVM takes memory slots the guest may only read
/// (`KVM_CAP_READONLY_MEM`): its writes there exit to the VMM.
pub(crate) fn has_readonly_mem() -> bool {
    kvm().is_ok() && READONLY_MEM.get().copied().unwrap_or(false)
}

/// Opens `/dev/kvm` now (it stays open for the process's life), and this
/// process's pagemap, so a daemon can drop the privileges needed to open
/// them before serving.
pub fn open_kvm() -> Result<()> {
    crate::pagemap::open();
    kvm().map(|_| ())
}

/// Whether KVM loads registers queued in a vCPU's run structure
/// (`KVM_CAP_SYNC_REGS`), which saves ioctls on every reset.
pub fn has_sync_regs() -> bool {
    kvm().is_ok() && SYNC_REGS.get().copied().unwrap_or(false)
}

/// The guest TSC frequency in kHz: from KVM if it says, else measured
/// against the host clock once.
pub fn tsc_khz(vcpu: &VcpuFd) -> u64 {
    static KHZ: OnceLock<u64> = OnceLock::new();
    *KHZ.get_or_init(|| match vcpu.get_tsc_khz() {
        Ok(khz) if khz > 0 => u64::from(khz),
        _ => calibrate_tsc_khz(),
    })
}

fn calibrate_tsc_khz() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    let rdtsc = || unsafe { std::arch::x86_64::_rdtsc() };
    let (t0, c0) = (Instant::now(), rdtsc());
    std::thread::sleep(Duration::from_millis(10));
    let (t1, c1) = (Instant::now(), rdtsc());
    let micros = (t1 - t0).as_micros().max(1) as u64;
    (c1 - c0) * 1000 / micros
}

/// The CPU features a guest of this host can use, decoded (as the agent
/// decodes its own CPU, [`wisp_abi::cpu`]) from the CPUID a vCPU is given
/// and the XCR0 it gets. That can be far less than the host has (KVM on
/// PVM may offer no XSAVE, hence no AVX, and a guest's `cpuid` may be
/// intercepted), so artifacts are compiled for, and snapshots and caches
/// keyed by, this set. The host's own set if `/dev/kvm` is unusable (no VM
/// runs then anyway).
pub fn guest_cpu_features() -> &'static CpuFeatures {
    GUEST_CPU.get_or_init(|| probe_guest_cpu_features().unwrap_or_else(|_| CpuFeatures::host()))
}

static GUEST_CPU: OnceLock<CpuFeatures> = OnceLock::new();

/// Computes [`guest_cpu_features`] afresh: asking KVM for its CPUID costs
/// about a millisecond on PVM hosts, which a short-lived process may
/// rather read from a copy it kept ([`assume_guest_cpu_features`]).
pub fn probe_guest_cpu_features() -> Result<CpuFeatures> {
    let kvm = kvm()?;
    let cpuid = crate::arch::supported_cpuid(kvm)?;
    let xcr0 = crate::arch::guest_xcr0(kvm)?;
    Ok(decode(CpuFeatures::host().vendor, cpuid.as_slice(), xcr0))
}

/// Takes `features`, which an earlier [`probe_guest_cpu_features`] on this
/// boot of this host answered, as [`guest_cpu_features`]. False if they
/// were already known.
pub fn assume_guest_cpu_features(features: CpuFeatures) -> bool {
    GUEST_CPU.set(features).is_ok()
}

/// The features of a vCPU given CPUID `entries` and XCR0 `xcr0` (without
/// the always-on x87 and SSE bits; `None`: CR4.OSXSAVE is clear).
fn decode(vendor: String, entries: &[kvm_cpuid_entry2], xcr0: Option<u64>) -> CpuFeatures {
    let cpuid = |leaf: u32, sub: u32| {
        entries
            .iter()
            .find(|e| {
                e.function == leaf
                    && (e.index == sub || e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0)
            })
            .map_or([0; 4], |e| [e.eax, e.ebx, e.ecx, e.edx])
    };
    let xcr0 = xcr0.map(|x| x | 0b11);
    CpuFeatures {
        vendor,
        features: wisp_abi::cpu::FEATURES
            .iter()
            .filter(|f| wisp_abi::cpu::feature(f, &cpuid, xcr0) == Some(true))
            .map(|f| f.to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            ecx,
            edx,
            ..Default::default()
        }
    }

    #[test]
    fn avx_is_offered_only_with_its_xcr0_state() {
        // Leaf 1: SSE2, SSE4.2, XSAVE, AVX.
        let entries = [
            entry(0, 0, 0),
            entry(1, (1 << 20) | (1 << 26) | (1 << 28), 1 << 26),
        ];
        let names = |xcr0| {
            let f = decode("GenuineIntel".into(), &entries, xcr0);
            f.features.into_iter().collect::<Vec<_>>().join(",")
        };
        assert_eq!(names(Some(0b100)), "avx,sse2,sse4.2,xsave");
        assert_eq!(names(Some(0)), "sse2,sse4.2,xsave");
        assert_eq!(names(None), "sse2,sse4.2,xsave");
    }
}
