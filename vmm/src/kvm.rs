//! The process-wide `/dev/kvm` handle and facts about the host that never
//! change, each queried once.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VcpuFd};

use crate::error::{Error, Result};

/// The shared `/dev/kvm` handle.
pub fn kvm() -> Result<&'static Kvm> {
    static KVM: OnceLock<Kvm> = OnceLock::new();
    if let Some(k) = KVM.get() {
        return Ok(k);
    }
    let k = Kvm::new().map_err(Error::KvmUnavailable)?;
    Ok(KVM.get_or_init(|| k))
}

/// Opens `/dev/kvm` now (it stays open for the process's life), so a
/// daemon can drop the privileges needed to open it before serving.
pub fn open_kvm() -> Result<()> {
    kvm().map(|_| ())
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
