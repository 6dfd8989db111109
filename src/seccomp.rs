//! The seccomp filters of the threads that run guest code: the daemon's
//! invocation threads and `wisp run`'s vCPU thread.
//!
//! The VM part of the allow-list (KVM ioctls, guest memory, the timeout
//! timer) is the VMM's ([`wisp_vmm::seccomp::vm_thread`]); each program
//! adds what its own code on those threads needs. Nothing else: no `open`,
//! no `socket`, no `execve`, no new processes or threads. Every entry and
//! why it is there is in docs/HARDENING.md (a test keeps the two in step).

use wisp_vmm::seccomp::{self, Enforcement, Filter, Syscall};

/// What happens when a filtered thread makes a system call not on its
/// allow-list (`wisp serve --seccomp`, `wisp run --seccomp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Seccomp {
    /// Refuse any other call with `EPERM`, and kill the process (SIGSYS)
    /// on one that would reach beyond the thread's VMs (processes,
    /// sockets, signals, executable memory, other devices), as Firecracker
    /// does: a thread that runs guest code and makes one is taken to be
    /// compromised. The C library's own lazy calls (a file it reads once,
    /// under memory pressure) just fail.
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

/// The allow-list of `wisp run`'s vCPU thread, which boots or restores the
/// VM, runs it with the process's stdio and drops it.
pub fn run_syscalls() -> Vec<Syscall> {
    use wisp_vmm::seccomp::{arg_eq, args_eq};
    let mut list = seccomp::vm_thread();
    // The module's stdio: fds 0, 1 and 2 only.
    list.push(Syscall::with("read", libc::SYS_read, vec![arg_eq(0, 0)]));
    list.push(Syscall::with(
        "write",
        libc::SYS_write,
        vec![arg_eq(0, 1), arg_eq(0, 2)],
    ));
    // Whether stdin has data (one descriptor, no waiting).
    list.push(Syscall::with(
        "poll",
        libc::SYS_poll,
        vec![args_eq(&[(1, 1), (2, 0)])],
    ));
    // The thread ending: Rust disables and unmaps its signal stack, glibc
    // blocks every signal.
    list.push(Syscall::any("sigaltstack", libc::SYS_sigaltstack));
    list.push(Syscall::with(
        "rt_sigprocmask",
        libc::SYS_rt_sigprocmask,
        vec![arg_eq(0, libc::SIG_BLOCK as u64)],
    ));
    list
}

fn filter(list: &[Syscall], mode: Seccomp) -> wisp_vmm::Result<Option<Filter>> {
    let enforcement = match mode {
        Seccomp::Kill => Enforcement::Deny,
        Seccomp::Log => Enforcement::Audit,
        Seccomp::Off => return Ok(None),
    };
    seccomp::compile(list, enforcement).map(Some)
}

/// The invocation threads' filter for `mode`, or `None` for
/// [`Seccomp::Off`].
pub fn invocation_filter(mode: Seccomp) -> wisp_vmm::Result<Option<Filter>> {
    filter(&invocation_syscalls(), mode)
}

/// `wisp run`'s vCPU thread's filter for `mode`, or `None` for
/// [`Seccomp::Off`]: without the kernel's verdict cache, which costs the
/// one-shot thread more to build than it saves ([`Filter::uncached`]).
pub fn run_filter(mode: Seccomp) -> wisp_vmm::Result<Option<Filter>> {
    Ok(filter(&run_syscalls(), mode)?.map(Filter::uncached))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/HARDENING.md has a row for every allowed system call and KVM
    /// ioctl.
    #[test]
    fn the_allow_list_is_documented() {
        let doc = include_str!("../docs/HARDENING.md");
        for s in invocation_syscalls().into_iter().chain(run_syscalls()) {
            assert!(
                doc.contains(&format!("| `{}` |", s.name)),
                "docs/HARDENING.md has no row for `{}`",
                s.name
            );
        }
        for (name, _) in seccomp::kvm_ioctls() {
            assert!(doc.contains(name), "docs/HARDENING.md does not list {name}");
        }
        for s in seccomp::reaching_calls() {
            assert!(
                doc.contains(&format!("`{}`", s.name)),
                "docs/HARDENING.md does not name the reaching call `{}`",
                s.name
            );
        }
    }

    #[test]
    fn every_mode_builds() {
        assert!(invocation_filter(Seccomp::Kill).unwrap().is_some());
        assert!(invocation_filter(Seccomp::Log).unwrap().is_some());
        assert!(invocation_filter(Seccomp::Off).unwrap().is_none());
        assert!(run_filter(Seccomp::Kill).unwrap().is_some());
    }
}
