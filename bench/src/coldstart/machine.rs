//! Facts about the host a benchmark ran on, recorded with every result so
//! numbers from different machines are never confused.

use serde::Serialize;

use crate::procfs::proc_kib;

/// What the results were measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// CPU model as `/proc/cpuinfo` names it.
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// Physical memory in MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// Which KVM serves `/dev/kvm`: `pvm` (guest ring 0 emulated, every
    /// exit expensive), `hardware` (VT-x/AMD-V) or `unknown`.
    pub kvm: String,
    /// The KVM module that provides it, if known.
    pub kvm_module: Option<String>,
    /// wisp's version.
    pub wisp_version: String,
    /// Unix time the run started.
    pub started_unix: u64,
}

impl Machine {
    /// Reads the facts of this host.
    pub fn detect() -> Machine {
        let uname = nix::sys::utsname::uname().ok();
        let text = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uname
                .as_ref()
                .map_or_else(String::new, |u| f(u).to_string_lossy().into_owned())
        };
        let (kvm, kvm_module) =
            kvm_flavour(|m| std::path::Path::new("/sys/module").join(m).exists());
        Machine {
            hostname: text(|u| u.nodename()),
            cpu_model: cpu_model(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib: mem_total_kib(
                &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
            ) / 1024,
            kernel: text(|u| u.release()),
            kvm: kvm.to_string(),
            kvm_module: kvm_module.map(str::to_string),
            wisp_version: env!("CARGO_PKG_VERSION").to_string(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// One line for the top of a report.
    pub fn describe(&self) -> String {
        format!(
            "{} · {} · {} cores · {} MiB · Linux {} · KVM: {}{}",
            self.hostname,
            self.cpu_model,
            self.cores,
            self.memory_mib,
            self.kernel,
            self.kvm,
            self.kvm_module
                .as_deref()
                .map_or_else(String::new, |m| format!(" ({m})"))
        )
    }
}

/// The first `model name` in `/proc/cpuinfo` text.
fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// `MemTotal` from `/proc/meminfo` text, in KiB (0 if absent).
fn mem_total_kib(meminfo: &str) -> u64 {
    proc_kib(meminfo, "MemTotal").unwrap_or(0)
}

/// PVM or hardware KVM, from which kernel modules are loaded.
fn kvm_flavour(loaded: impl Fn(&str) -> bool) -> (&'static str, Option<&'static str>) {
    if loaded("kvm_pvm") {
        ("pvm", Some("kvm_pvm"))
    } else if let Some(m) = ["kvm_intel", "kvm_amd"].into_iter().find(|m| loaded(m)) {
        ("hardware", Some(m))
    } else {
        ("unknown", None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpuinfo_and_meminfo() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n";
        assert_eq!(cpu_model(cpuinfo), "AMD EPYC 7B13");
        assert_eq!(cpu_model("processor : 0\n"), "unknown");
        let meminfo = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   2000 kB\n";
        assert_eq!(mem_total_kib(meminfo), 24_576_000);
        assert_eq!(proc_kib(meminfo, "MemAvailable"), Some(2000));
        assert_eq!(proc_kib(meminfo, "Mem"), None);
        assert_eq!(mem_total_kib(""), 0);
    }

    #[test]
    fn pvm_wins_over_hardware_modules() {
        assert_eq!(
            kvm_flavour(|m| m == "kvm_pvm" || m == "kvm_amd"),
            ("pvm", Some("kvm_pvm"))
        );
        assert_eq!(
            kvm_flavour(|m| m == "kvm_intel"),
            ("hardware", Some("kvm_intel"))
        );
        assert_eq!(kvm_flavour(|_| false), ("unknown", None));
    }
}
