//! The CPU features a guest gets on this host, kept in a file for the rest
//! of this boot, so that a short-lived `wisp run` need not ask KVM:
//! `KVM_GET_SUPPORTED_CPUID` costs about a millisecond on PVM hosts, half
//! of a cached run's budget, and its answer cannot change before the next
//! boot (the KVM module's parameters are fixed when it loads).
//!
//! The copy is trusted as far as the user's cache is: a wrong one makes
//! modules fail the agent's check of their artifact, never run code the
//! guest cannot (the agent checks every feature against its own CPU).

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use wisp_snapshot::CpuFeatures;

/// The file under the cache root.
const FILE: &str = "guest-cpu.json";
/// This boot's identity.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Kept {
    boot_id: String,
    /// [`host_cpuid`] when the copy was kept.
    host_cpuid: Vec<u32>,
    guest: CpuFeatures,
}

/// What tells this host's CPU from another's, read straight from `cpuid`
/// (the vendor and highest leaf, the model and feature words of leaves 1
/// and 7): three instructions, where `CpuFeatures::host` runs the standard
/// library's whole feature detection (a dozen, each a VM exit of several
/// microseconds on the hosts measured, on every `wisp run`). Leaf 1's EBX,
/// which holds the APIC ID of the CPU that ran it, is left out.
fn host_cpuid() -> Vec<u32> {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{__cpuid, __cpuid_count};
        let vendor = __cpuid(0);
        let model = __cpuid(1);
        let mut words = vec![
            vendor.eax, vendor.ebx, vendor.ecx, vendor.edx, model.eax, model.ecx, model.edx,
        ];
        if vendor.eax >= 7 {
            let extended = __cpuid_count(7, 0);
            words.extend([extended.ebx, extended.ecx, extended.edx]);
        }
        words
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

/// Makes the guest's CPU features known to this process: from the copy in
/// `root` if it was kept on this boot of this CPU, else from KVM, keeping a
/// copy. Best effort: on any failure the features are found the usual way
/// when first needed.
pub fn recall(root: &Path) {
    let Ok(boot_id) = fs::read_to_string(BOOT_ID) else {
        return;
    };
    let host = host_cpuid();
    let path = root.join(FILE);
    let kept = fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Kept>(&bytes).ok());
    if let Some(kept) = kept.filter(|k| k.boot_id == boot_id && k.host_cpuid == host) {
        wisp_vmm::assume_guest_cpu_features(kept.guest);
        return;
    }
    let Ok(guest) = wisp_vmm::probe_guest_cpu_features() else {
        return;
    };
    wisp_vmm::assume_guest_cpu_features(guest.clone());
    let kept = Kept {
        boot_id,
        host_cpuid: host,
        guest,
    };
    let _ = keep(root, &path, &kept);
}

/// Writes `kept` to `path` whole or not at all (a private temporary file
/// renamed into place), so concurrent runs never read half of it.
fn keep(root: &Path, path: &Path, kept: &Kept) -> std::io::Result<()> {
    fs::create_dir_all(root)?;
    let mut tmp = tempfile::NamedTempFile::new_in(root)?;
    tmp.write_all(&serde_json::to_vec(kept)?)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_copy_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let kept = Kept {
            boot_id: "b".into(),
            host_cpuid: host_cpuid(),
            guest: CpuFeatures::host(),
        };
        keep(&root, &root.join(FILE), &kept).unwrap();
        let back: Kept = serde_json::from_slice(&fs::read(root.join(FILE)).unwrap()).unwrap();
        assert_eq!(back, kept);
        assert_eq!(fs::read_dir(&root).unwrap().count(), 1, "no temporary left");
    }

    /// The copy is found again whichever CPU the next run reads `cpuid` on.
    #[test]
    fn the_host_cpuid_is_the_same_on_every_cpu() {
        // SAFETY: a zeroed cpu_set_t is an empty set, which
        // sched_getaffinity fills in.
        let allowed = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set),
                0
            );
            set
        };
        let on = |cpu: usize| {
            std::thread::spawn(move || {
                // SAFETY: as above; CPU_SET writes inside the set.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    assert_eq!(
                        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
                        0
                    );
                }
                host_cpuid()
            })
            .join()
            .unwrap()
        };
        // SAFETY: CPU_ISSET reads inside the set.
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) })
            .collect();
        let first = on(cpus[0]);
        #[cfg(target_arch = "x86_64")]
        assert!(first.len() >= 7, "{first:?}");
        for &cpu in &cpus[1..] {
            assert_eq!(on(cpu), first, "CPU {cpu} against CPU {}", cpus[0]);
        }
    }
}
