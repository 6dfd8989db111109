//! What a thread that runs micro-VMs may ask of the kernel: the system
//! calls, with their argument filters, that restoring, running, resetting,
//! recycling and dropping VMs make, as a seccomp allow-list (built with
//! `seccompiler`, as Firecracker does).
//!
//! A program that runs VMs on dedicated threads adds its own needs (logs,
//! waking its other threads) with [`Syscall::any`] / [`Syscall::with`],
//! builds the filter once with [`compile`], calls [`prepare`] and then
//! [`apply`] on each such thread before it touches a VM. The list is
//! documented, with the reason for every entry, in docs/HARDENING.md.
//!
//! Booting a VM from scratch is covered too (`wisp run` boots on its
//! filtered thread); opening files is not: those threads get no
//! `open`/`openat` at all.
//!
//! Two tiers decide what happens outside the list. The C library and
//! Rust's runtime make calls of their own on any thread, lazily and only
//! under some conditions (glibc's malloc opens
//! `/proc/sys/vm/overcommit_memory` the first time it shrinks a thread's
//! heap), and they cope with those calls failing. So a call outside the
//! list fails with `EPERM`; only the calls in [`reaching_calls`], which
//! would take the thread beyond its own VMs (new processes, sockets,
//! signals, executable memory, other devices) and which no library makes
//! on its own, kill the process.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction};
use seccompiler::{
    SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use crate::error::Result;

/// The KVM ioctls a VM thread issues, numbered as in `kvm-ioctls` (which
/// keeps its numbers private); private, so the macros' functions need no
/// docs of their own.
mod nr {
    use kvm_bindings::{
        kvm_clear_dirty_log, kvm_cpuid2, kvm_dirty_log, kvm_enable_cap, kvm_fpu, kvm_msrs,
        kvm_regs, kvm_sregs, kvm_userspace_memory_region, kvm_xcrs, kvm_xsave, KVMIO,
    };
    use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr, ioctl_iowr_nr};

    ioctl_io_nr!(KVM_CREATE_VM, KVMIO, 0x01);
    ioctl_io_nr!(KVM_GET_VCPU_MMAP_SIZE, KVMIO, 0x04);
    ioctl_iowr_nr!(KVM_GET_SUPPORTED_CPUID, KVMIO, 0x05, kvm_cpuid2);
    ioctl_io_nr!(KVM_CREATE_VCPU, KVMIO, 0x41);
    ioctl_iow_nr!(KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_dirty_log);
    ioctl_iowr_nr!(KVM_CLEAR_DIRTY_LOG, KVMIO, 0xc0, kvm_clear_dirty_log);
    ioctl_iow_nr!(KVM_ENABLE_CAP, KVMIO, 0xa3, kvm_enable_cap);
    ioctl_iow_nr!(
        KVM_SET_USER_MEMORY_REGION,
        KVMIO,
        0x46,
        kvm_userspace_memory_region
    );
    ioctl_io_nr!(KVM_SET_TSS_ADDR, KVMIO, 0x47);
    ioctl_iow_nr!(KVM_SET_FPU, KVMIO, 0x8d, kvm_fpu);
    ioctl_io_nr!(KVM_GET_TSC_KHZ, KVMIO, 0xa3);
    ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
    ioctl_iow_nr!(KVM_SET_REGS, KVMIO, 0x82, kvm_regs);
    ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
    ioctl_iow_nr!(KVM_SET_SREGS, KVMIO, 0x84, kvm_sregs);
    ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_msrs);
    ioctl_iow_nr!(KVM_SET_MSRS, KVMIO, 0x89, kvm_msrs);
    ioctl_iow_nr!(KVM_SET_CPUID2, KVMIO, 0x90, kvm_cpuid2);
    ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xa4, kvm_xsave);
    ioctl_iow_nr!(KVM_SET_XSAVE, KVMIO, 0xa5, kvm_xsave);
    ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xa6, kvm_xcrs);
    ioctl_iow_nr!(KVM_SET_XCRS, KVMIO, 0xa7, kvm_xcrs);
}
pub(crate) use nr::KVM_CLEAR_DIRTY_LOG;
use nr::*;

/// The KVM ioctls a VM thread may issue, by name.
pub fn kvm_ioctls() -> Vec<(&'static str, u64)> {
    vec![
        // Creating a shell (VM + vCPU) for a cold start without a spare one.
        ("KVM_CREATE_VM", KVM_CREATE_VM()),
        ("KVM_GET_VCPU_MMAP_SIZE", KVM_GET_VCPU_MMAP_SIZE()),
        ("KVM_SET_TSS_ADDR", KVM_SET_TSS_ADDR()),
        ("KVM_ENABLE_CAP", KVM_ENABLE_CAP()),
        ("KVM_CREATE_VCPU", KVM_CREATE_VCPU()),
        ("KVM_SET_CPUID2", KVM_SET_CPUID2()),
        // Cached by `prepare`; listed in case the cache is cold.
        ("KVM_GET_SUPPORTED_CPUID", KVM_GET_SUPPORTED_CPUID()),
        // Attaching, detaching guest memory; the dirty log of a reset.
        ("KVM_SET_USER_MEMORY_REGION", KVM_SET_USER_MEMORY_REGION()),
        ("KVM_GET_DIRTY_LOG", KVM_GET_DIRTY_LOG()),
        ("KVM_CLEAR_DIRTY_LOG", KVM_CLEAR_DIRTY_LOG()),
        // Running, and loading the vCPU state of a restore or reset.
        ("KVM_RUN", KVM_RUN()),
        ("KVM_GET_REGS", KVM_GET_REGS()),
        ("KVM_SET_REGS", KVM_SET_REGS()),
        ("KVM_GET_SREGS", KVM_GET_SREGS()),
        ("KVM_SET_SREGS", KVM_SET_SREGS()),
        ("KVM_GET_MSRS", KVM_GET_MSRS()),
        ("KVM_SET_MSRS", KVM_SET_MSRS()),
        ("KVM_GET_XSAVE", KVM_GET_XSAVE()),
        ("KVM_SET_XSAVE", KVM_SET_XSAVE()),
        ("KVM_GET_XCRS", KVM_GET_XCRS()),
        ("KVM_SET_XCRS", KVM_SET_XCRS()),
        // Booting from scratch: the initial FPU state; the TSC rate the
        // agent reads time with (queried once per process).
        ("KVM_SET_FPU", KVM_SET_FPU()),
        ("KVM_GET_TSC_KHZ", KVM_GET_TSC_KHZ()),
    ]
}

/// Every ioctl request a VM thread may make: KVM's, and `PAGEMAP_SCAN` (on
/// its own pagemap: what a reset finds touched in memory KVM does not log).
fn vm_ioctls() -> Vec<u64> {
    kvm_ioctls()
        .into_iter()
        .map(|(_, request)| request)
        .chain([crate::pagemap::PAGEMAP_SCAN])
        .collect()
}

/// `madvise` advice a VM thread may give: dropping pages (the allocator),
/// huge pages and pre-faulting (guest memory strategies).
const MADVICE: [libc::c_int; 5] = [
    libc::MADV_DONTNEED,
    libc::MADV_FREE,
    libc::MADV_HUGEPAGE,
    libc::MADV_POPULATE_READ,
    libc::MADV_POPULATE_WRITE,
];

/// One allowed system call and, if it is allowed only for some arguments,
/// the rules (any of which allows it).
#[derive(Clone, Debug)]
pub struct Syscall {
    /// Its name, as in `man 2`.
    pub name: &'static str,
    /// Its number on this architecture.
    pub nr: i64,
    /// Argument rules; empty means any arguments.
    pub rules: Vec<SeccompRule>,
}

impl Syscall {
    /// `nr` with any arguments.
    pub fn any(name: &'static str, nr: i64) -> Syscall {
        Syscall {
            name,
            nr,
            rules: Vec::new(),
        }
    }

    /// `nr` only when one of `rules` matches.
    pub fn with(name: &'static str, nr: i64, rules: Vec<SeccompRule>) -> Syscall {
        Syscall { name, nr, rules }
    }
}

/// A rule that holds when 32-bit argument `arg` equals `value`.
pub fn arg_eq(arg: u8, value: u64) -> SeccompRule {
    rule(vec![cond(arg, SeccompCmpOp::Eq, value)])
}

/// A rule that holds when every 32-bit argument `(index, value)` equals
/// its value.
pub fn args_eq(args: &[(u8, u64)]) -> SeccompRule {
    rule(
        args.iter()
            .map(|&(arg, value)| cond(arg, SeccompCmpOp::Eq, value))
            .collect(),
    )
}

/// A rule that holds when none of the bits in `mask` are set in argument
/// `arg` (32 bits).
pub fn arg_clear(arg: u8, mask: u64) -> SeccompRule {
    rule(vec![cond(arg, SeccompCmpOp::MaskedEq(mask), 0)])
}

/// A rule that holds when every bit in `mask` is set in argument `arg`
/// (32 bits).
pub fn arg_set(arg: u8, mask: u64) -> SeccompRule {
    rule(vec![cond(arg, SeccompCmpOp::MaskedEq(mask), mask)])
}

/// A rule that holds when argument `arg` (32 bits) is none of `values`.
pub fn arg_none_of(arg: u8, values: &[u64]) -> SeccompRule {
    rule(
        values
            .iter()
            .map(|&value| cond(arg, SeccompCmpOp::Ne, value))
            .collect(),
    )
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).expect("argument index below 6")
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("a rule with conditions")
}

/// The system calls of a thread that boots or restores, runs, resets,
/// recycles and drops VMs (after [`prepare`]), and of the Rust code around that
/// (allocation, locks).
pub fn vm_thread() -> Vec<Syscall> {
    use libc::*;
    vec![
        Syscall::with(
            "ioctl",
            SYS_ioctl,
            vm_ioctls()
                .into_iter()
                .map(|request| arg_eq(1, request))
                .collect(),
        ),
        // Guest memory (snapshot file mapped copy-on-write), the vCPU's
        // `kvm_run` page, the allocator: never executable.
        Syscall::with("mmap", SYS_mmap, vec![arg_clear(2, PROT_EXEC as u64)]),
        Syscall::with(
            "mprotect",
            SYS_mprotect,
            vec![arg_clear(2, PROT_EXEC as u64)],
        ),
        Syscall::any("munmap", SYS_munmap),
        Syscall::any("mremap", SYS_mremap),
        Syscall::any("brk", SYS_brk),
        Syscall::with(
            "madvise",
            SYS_madvise,
            MADVICE.iter().map(|&a| arg_eq(2, a as u64)).collect(),
        ),
        // A reset finds the pages touched in memory KVM does not log.
        Syscall::any("mincore", SYS_mincore),
        // A reset copies the written pages back from the snapshot file.
        Syscall::any("pread64", SYS_pread64),
        // Dropping a VM closes its VM and vCPU descriptors.
        Syscall::any("close", SYS_close),
        // The invocation timeout: a per-thread timer signals the vCPU
        // thread, whose handler returns through rt_sigreturn.
        Syscall::with(
            "timer_create",
            SYS_timer_create,
            vec![arg_eq(0, CLOCK_MONOTONIC as u64)],
        ),
        Syscall::any("timer_settime", SYS_timer_settime),
        Syscall::any("timer_delete", SYS_timer_delete),
        Syscall::any("gettid", SYS_gettid),
        Syscall::any("rt_sigreturn", SYS_rt_sigreturn),
        Syscall::any("restart_syscall", SYS_restart_syscall),
        // The guest's `Sleep` message.
        Syscall::any("clock_nanosleep", SYS_clock_nanosleep),
        // Clocks (the vDSO normally answers without a system call).
        Syscall::any("clock_gettime", SYS_clock_gettime),
        // The per-invocation random seed.
        Syscall::any("getrandom", SYS_getrandom),
        // Locks, condition variables, one-time initialisation.
        Syscall::any("futex", SYS_futex),
        // glibc's malloc sizes its arena count from the CPUs it may use
        // when a thread first allocates.
        Syscall::any("sched_getaffinity", SYS_sched_getaffinity),
        Syscall::any("sched_yield", SYS_sched_yield),
        // A thread that ends (only this thread, never the process).
        Syscall::any("exit", SYS_exit),
    ]
}

/// The calls that would take a VM thread beyond its own VMs: starting
/// processes or threads, sockets, signals to others, executable memory,
/// ioctls but KVM's and a pagemap scan, tracing, namespaces, credentials, kernel
/// modules. No code of ours, of the C library or of Rust's runtime makes
/// them on a VM thread, so one of them means the thread is compromised:
/// under [`Enforcement::Deny`] they kill the process.
pub fn reaching_calls() -> Vec<Syscall> {
    use libc::*;
    let mut calls = vec![
        Syscall::with("ioctl", SYS_ioctl, vec![arg_none_of(1, &vm_ioctls())]),
        Syscall::with("mmap", SYS_mmap, vec![arg_set(2, PROT_EXEC as u64)]),
        Syscall::with("mprotect", SYS_mprotect, vec![arg_set(2, PROT_EXEC as u64)]),
    ];
    let plain: &[(&'static str, i64)] = &[
        ("execve", SYS_execve),
        ("execveat", SYS_execveat),
        ("fork", SYS_fork),
        ("vfork", SYS_vfork),
        ("clone", SYS_clone),
        ("clone3", SYS_clone3),
        ("socket", SYS_socket),
        ("socketpair", SYS_socketpair),
        ("connect", SYS_connect),
        ("bind", SYS_bind),
        ("listen", SYS_listen),
        ("accept", SYS_accept),
        ("accept4", SYS_accept4),
        ("ptrace", SYS_ptrace),
        ("process_vm_readv", SYS_process_vm_readv),
        ("process_vm_writev", SYS_process_vm_writev),
        ("kill", SYS_kill),
        ("tkill", SYS_tkill),
        ("tgkill", SYS_tgkill),
        ("rt_sigqueueinfo", SYS_rt_sigqueueinfo),
        ("rt_tgsigqueueinfo", SYS_rt_tgsigqueueinfo),
        ("pidfd_open", SYS_pidfd_open),
        ("pidfd_getfd", SYS_pidfd_getfd),
        ("pidfd_send_signal", SYS_pidfd_send_signal),
        ("pkey_mprotect", SYS_pkey_mprotect),
        ("memfd_create", SYS_memfd_create),
        ("bpf", SYS_bpf),
        ("io_uring_setup", SYS_io_uring_setup),
        ("userfaultfd", SYS_userfaultfd),
        ("perf_event_open", SYS_perf_event_open),
        ("keyctl", SYS_keyctl),
        ("add_key", SYS_add_key),
        ("request_key", SYS_request_key),
        ("init_module", SYS_init_module),
        ("finit_module", SYS_finit_module),
        ("delete_module", SYS_delete_module),
        ("kexec_load", SYS_kexec_load),
        ("kexec_file_load", SYS_kexec_file_load),
        ("mount", SYS_mount),
        ("umount2", SYS_umount2),
        ("pivot_root", SYS_pivot_root),
        ("chroot", SYS_chroot),
        ("setns", SYS_setns),
        ("unshare", SYS_unshare),
        ("open_by_handle_at", SYS_open_by_handle_at),
        ("setuid", SYS_setuid),
        ("setgid", SYS_setgid),
        ("setreuid", SYS_setreuid),
        ("setregid", SYS_setregid),
        ("setresuid", SYS_setresuid),
        ("setresgid", SYS_setresgid),
        ("setgroups", SYS_setgroups),
        ("capset", SYS_capset),
        ("personality", SYS_personality),
        ("reboot", SYS_reboot),
    ];
    calls.extend(plain.iter().map(|&(name, nr)| Syscall::any(name, nr)));
    calls
}

/// What a filter does with a call outside its allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    /// The call fails with `EPERM` (and is logged to the kernel's audit
    /// log); one of [`reaching_calls`] kills the process.
    Deny,
    /// The call is allowed and logged: for auditing the list on a new
    /// kernel or C library.
    Audit,
}

/// A thread's confinement: one BPF program that the kernel runs on every
/// system call. It kills on the calls that reach beyond the thread (or
/// logs them), then allows the allow-list and denies (or logs) the rest.
/// It is two programs of seccompiler's, which gives each one verdict for
/// what it matches and one for the rest, run one after the other: the
/// first's verdict stands unless it allows the call, when the second
/// decides ([`chain`]). Installed separately, as they once were, the
/// kernel took the stricter of the two verdicts, which is the same one;
/// one program is one installation (and one JIT compilation) fewer.
#[derive(Clone, Debug)]
pub struct Filter {
    program: BpfProgram,
}

impl Filter {
    /// This filter without the kernel's per-call verdict cache, for a
    /// thread that makes few system calls before it ends (`wisp run`'s).
    /// As it installs a program, the kernel works out which system calls
    /// the program allows whatever their arguments, by running it for
    /// every system call number: ~0.8 µs per instruction on the hosts
    /// measured, 0.3–0.5 ms for this filter, more than the thread then
    /// spends in its guest. It stops at the first instruction that loads
    /// something else than the call's number or architecture, so the
    /// program first loads the caller's instruction pointer (the next
    /// instruction, the architecture check, replaces it): the verdicts are
    /// the same, every call just runs the program (JIT-compiled, a
    /// fraction of a microsecond; `ioctl`, the thread's busiest call, is
    /// never cached anyway, its verdict depends on its arguments).
    pub fn uncached(mut self) -> Filter {
        let load_ip = || seccompiler::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: std::mem::offset_of!(libc::seccomp_data, instruction_pointer) as u32,
        };
        // Jumps are relative: prepending keeps every target.
        self.program.insert(0, load_ip());
        self
    }
}

/// One BPF program: `matched` for calls that `list` matches, `otherwise`
/// for the rest. Entries for the same system call are merged (any of their
/// rules matches; one without rules matches it outright).
fn program(
    list: &[Syscall],
    matched: SeccompAction,
    otherwise: SeccompAction,
) -> Result<BpfProgram> {
    let mut rules: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    for s in list {
        let entry = rules.entry(s.nr).or_insert_with(|| Some(Vec::new()));
        match (entry.as_mut(), s.rules.is_empty()) {
            (_, true) => *entry = None,
            (Some(list), false) => list.extend(s.rules.iter().cloned()),
            (None, false) => {}
        }
    }
    let rules = rules
        .into_iter()
        .map(|(nr, r)| (nr, r.unwrap_or_default()))
        .collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(seccomp_error)?;
    let filter = SeccompFilter::new(rules, otherwise, matched, arch).map_err(seccomp_error)?;
    BpfProgram::try_from(filter).map_err(seccomp_error)
}

/// Builds the filter that allows `allowed`, treats everything else as
/// `enforcement` says, and kills on [`reaching_calls`] under
/// [`Enforcement::Deny`].
pub fn compile(allowed: &[Syscall], enforcement: Enforcement) -> Result<Filter> {
    let (denied, reaching) = match enforcement {
        Enforcement::Deny => (
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::KillProcess,
        ),
        Enforcement::Audit => (SeccompAction::Log, SeccompAction::Log),
    };
    let program = chain(
        program(&reaching_calls(), reaching, SeccompAction::Allow)?,
        program(allowed, SeccompAction::Allow, denied)?,
    )?;
    Ok(Filter { program })
}

/// `first`, then `second` where `first` allows the call: each of `first`'s
/// "allow" returns becomes a jump to `second`'s start (one instruction
/// for one, so no other jump moves). `second` loads what it tests itself.
fn chain(first: BpfProgram, second: BpfProgram) -> Result<BpfProgram> {
    let allow = seccompiler::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    };
    let len = first.len();
    let mut chained: BpfProgram = first
        .into_iter()
        .enumerate()
        .map(|(at, insn)| {
            if (insn.code, insn.k) == (allow.code, allow.k) {
                seccompiler::sock_filter {
                    code: (libc::BPF_JMP | libc::BPF_JA) as u16,
                    jt: 0,
                    jf: 0,
                    // Past this instruction to `second`'s first.
                    k: (len - at - 1) as u32,
                }
            } else {
                insn
            }
        })
        .collect();
    chained.extend(second);
    if chained.len() > libc::BPF_MAXINSNS as usize {
        return Err(seccomp_error(std::io::Error::other(format!(
            "the filter has {} instructions, more than the kernel's {}",
            chained.len(),
            libc::BPF_MAXINSNS
        ))));
    }
    Ok(chained)
}

/// Installs `filter` on the calling thread, for good. Denied calls are
/// logged to the kernel's audit log too (`SECCOMP_FILTER_FLAG_LOG`), so a
/// call the list misses shows up there without killing anything.
pub fn apply(filter: &Filter) -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(seccomp_error(std::io::Error::last_os_error()));
    }
    let program = &filter.program;
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(seccomp_error)?,
        filter: program.as_ptr().cast_mut().cast(),
    };
    // SAFETY: the kernel copies the program out of `fprog`, which points
    // at `program`'s live instructions, before returning.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_LOG,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(seccomp_error(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn seccomp_error(e: impl std::error::Error + Send + Sync + 'static) -> crate::Error {
    crate::Error::Seccomp(Box::new(e))
}

/// Does once per process what a VM thread would otherwise do on its first
/// VM, with system calls its filter does not allow: opens `/dev/kvm` and
/// the process's pagemap,
/// fetches the CPUID KVM supports and installs the timeout signal's
/// handler. Call it before filtering any thread.
pub fn prepare() -> Result<()> {
    crate::pagemap::open();
    let kvm = crate::kvm::kvm()?;
    crate::arch::supported_cpuid(kvm)?;
    crate::timer::install_handler().map_err(crate::Error::Timer)
}

/// [`prepare`] without fetching KVM's CPUID, for a thread that will likely
/// only restore ([`crate::Shell::without_cpuid`]): a snapshot carries its
/// guest's CPUID, and a thread that boots after all fetches KVM's under
/// its filter (which allows that ioctl).
pub fn prepare_to_restore() -> Result<()> {
    crate::pagemap::open();
    crate::kvm::kvm()?;
    crate::timer::install_handler().map_err(crate::Error::Timer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        let numbers: std::collections::HashMap<_, _> = kvm_ioctls().into_iter().collect();
        // From <linux/kvm.h> on x86-64.
        assert_eq!(numbers["KVM_RUN"], 0xae80);
        assert_eq!(numbers["KVM_CREATE_VM"], 0xae01);
        assert_eq!(numbers["KVM_SET_USER_MEMORY_REGION"], 0x4020_ae46);
        assert_eq!(numbers["KVM_GET_DIRTY_LOG"], 0x4010_ae42);
        assert_eq!(numbers["KVM_SET_CPUID2"], 0x4008_ae90);
        assert_eq!(numbers["KVM_GET_XSAVE"], 0x9000_aea4);
        assert_eq!(numbers["KVM_SET_FPU"], 0x41a0_ae8d);
        assert_eq!(numbers["KVM_GET_TSC_KHZ"], 0xaea3);
    }

    #[test]
    fn the_filter_compiles_with_merged_entries() {
        let mut list = vm_thread();
        list.push(Syscall::any("write", libc::SYS_write));
        list.push(Syscall::with("ioctl", libc::SYS_ioctl, vec![arg_eq(1, 1)]));
        for enforcement in [Enforcement::Deny, Enforcement::Audit] {
            let filter = compile(&list, enforcement).unwrap();
            assert!(!filter.program.is_empty());
        }
    }

    #[test]
    fn uncached_programs_first_load_the_instruction_pointer() {
        let filter = compile(&vm_thread(), Enforcement::Deny).unwrap();
        let uncached = filter.clone().uncached();
        let (before, after) = (&filter.program, &uncached.program);
        assert_eq!(after.len(), before.len() + 1);
        assert_eq!(
            (after[0].code, after[0].k),
            ((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, 8),
            "a load of seccomp_data.instruction_pointer"
        );
        assert_eq!(after[1..], before[..]);
    }

    /// The first program's "allow" returns, and only those, jump to the
    /// second program's start; the rest of both is unchanged.
    #[test]
    fn chained_programs_go_on_where_the_first_allows() {
        let first = program(
            &reaching_calls(),
            SeccompAction::KillProcess,
            SeccompAction::Allow,
        )
        .unwrap();
        let second = program(&vm_thread(), SeccompAction::Allow, SeccompAction::Errno(1)).unwrap();
        let chained = chain(first.clone(), second.clone()).unwrap();
        assert_eq!(chained.len(), first.len() + second.len());
        assert_eq!(chained[first.len()..], second[..]);
        let ret = (libc::BPF_RET | libc::BPF_K) as u16;
        let ja = (libc::BPF_JMP | libc::BPF_JA) as u16;
        let mut jumps = 0;
        for (at, (was, is)) in first.iter().zip(&chained).enumerate() {
            if (was.code, was.k) == (ret, libc::SECCOMP_RET_ALLOW) {
                assert_eq!((is.code, at + 1 + is.k as usize), (ja, first.len()));
                jumps += 1;
            } else {
                assert_eq!(was, is);
            }
        }
        assert!(jumps > 0, "the first program allows something");
    }

    /// A call is either allowed or reaching, never both outright: the
    /// calls on both lists (ioctl, mmap, mprotect) split on their
    /// arguments.
    #[test]
    fn no_allowed_call_is_also_reaching() {
        let allowed = vm_thread();
        for reaching in reaching_calls() {
            let also = allowed.iter().find(|a| a.nr == reaching.nr);
            if let Some(also) = also {
                assert!(
                    !also.rules.is_empty() && !reaching.rules.is_empty(),
                    "`{}` is both allowed and reaching for some arguments",
                    reaching.name
                );
            }
        }
    }
}
