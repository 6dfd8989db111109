//! The seccomp filter of the daemon's invocation threads: what a thread
//! that runs guest code may ask of the kernel.
//!
//! The VM part of the allow-list (KVM ioctls, guest memory, the timeout
//! timer) is the VMM's ([`wisp_vmm::seccomp::vm_thread`]); the daemon adds
//! what its own code on those threads needs. Nothing else: no `open`, no
//! `socket`, no `execve`, no new processes or threads. Every entry and why
//! it is there is in docs/HARDENING.md (a test keeps the two in step).

use wisp_vmm::seccomp::{self, BpfProgram, SeccompAction, Syscall};

/// What happens when a filtered thread makes a system call not on its
/// allow-list (`wisp serve --seccomp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Seccomp {
    /// Kill the daemon (SIGSYS), as Firecracker does: a thread that runs
    /// guest code and strays from its list is taken to be compromised.
    #[default]
    Kill,
    /// Allow the call but log it to the kernel's audit log (`dmesg`,
    /// `type=1326`): for auditing the list on a new kernel or libc.
    Log,
    /// No filter.
    Off,
}

impl Seccomp {
    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Seccomp::Kill => "kill",
            Seccomp::Log => "log",
            Seccomp::Off => "off",
        }
    }
}

/// The allow-list of an invocation thread.
pub fn invocation_syscalls() -> Vec<Syscall> {
    let mut list = seccomp::vm_thread();
    // Log lines (stderr) and waking the async runtime when a result is
    // ready (mio's eventfd). The descriptors are not known when the filter
    // is built, so any descriptor the daemon already has; these threads
    // can open none.
    list.push(Syscall::any("write", libc::SYS_write));
    list
}

/// The BPF program for `mode`, or `None` for [`Seccomp::Off`].
pub fn invocation_filter(mode: Seccomp) -> wisp_vmm::Result<Option<BpfProgram>> {
    let action = match mode {
        Seccomp::Kill => SeccompAction::KillProcess,
        Seccomp::Log => SeccompAction::Log,
        Seccomp::Off => return Ok(None),
    };
    seccomp::compile(&invocation_syscalls(), action).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/HARDENING.md has a row for every allowed system call and KVM
    /// ioctl.
    #[test]
    fn the_allow_list_is_documented() {
        let doc = include_str!("../../docs/HARDENING.md");
        for s in invocation_syscalls() {
            assert!(
                doc.contains(&format!("| `{}` |", s.name)),
                "docs/HARDENING.md has no row for `{}`",
                s.name
            );
        }
        for (name, _) in seccomp::kvm_ioctls() {
            assert!(doc.contains(name), "docs/HARDENING.md does not list {name}");
        }
    }

    #[test]
    fn every_mode_builds() {
        assert!(invocation_filter(Seccomp::Kill).unwrap().is_some());
        assert!(invocation_filter(Seccomp::Log).unwrap().is_some());
        assert!(invocation_filter(Seccomp::Off).unwrap().is_none());
    }
}
