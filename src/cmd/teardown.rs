//! Exiting before the kernel tears the VM down.
//!
//! When a process that holds a KVM VM exits, the kernel destroys the VM
//! (its memory slots, shadow page tables, debugfs entries and worker
//! thread) and unmaps guest memory before the parent learns the exit
//! status: ~1 ms on the hosts measured, more than a cached `wisp run`
//! spends in its VM. That work goes to a short-lived process that shares
//! this one's memory and descriptor table, so holds its VM, and that the
//! kernel kills as this one dies: the exit status reaches the caller
//! first, and the teardown follows in the background.
//!
//! The process is started ahead ([`prepare`]), while this one waits for
//! its guest to run (cloning it at the exit took ~0.1 ms more of every
//! run), or at the exit ([`exit`]) if it was not. [`exit`] closes stdin,
//! stdout and stderr in the shared table, so a caller reading this
//! process's output sees end-of-file as it exits, whenever the teardown
//! process gets a CPU. What else the table holds (the VM, files this
//! process opened) goes when that process dies. If it cannot be started,
//! the process exits the ordinary way.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

/// Stack of the teardown process: it makes a few system calls.
const STACK_SIZE: usize = 64 << 10;

/// Whether the teardown process was started.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Starts the teardown process now, if it is not running yet: it then
/// shares every descriptor this process opens or closes from here on.
pub fn prepare() {
    if !STARTED.swap(true, Ordering::AcqRel) && !spawn_teardown() {
        STARTED.store(false, Ordering::Release);
    }
}

/// Exits with `status`; with `holds_vm`, leaves the VM's teardown to a
/// process that dies with this one (see the module docs).
pub fn exit(status: i32, holds_vm: bool) -> ! {
    if holds_vm {
        prepare();
    }
    if STARTED.load(Ordering::Acquire) {
        // Output is out (the caller flushed stdout; stderr is unbuffered).
        for fd in 0..=2 {
            // SAFETY: closing the standard descriptors, which nothing
            // uses after this point; the teardown process shares them.
            unsafe {
                libc::close(fd);
            }
        }
    }
    std::process::exit(status)
}

/// Starts the teardown process; false if it could not be (the exit then
/// simply pays for the teardown itself).
fn spawn_teardown() -> bool {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // Leaked: the teardown process runs on it after this process is gone.
    let stack: &'static mut [u8] = Box::leak(vec![0u8; STACK_SIZE].into_boxed_slice());
    // The stack grows down from its 16-byte-aligned top.
    let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;
    // SAFETY: the child runs `teardown` on its own leaked stack, sharing
    // this process's memory (CLONE_VM) and descriptor table (CLONE_FILES);
    // `teardown` makes only raw system calls (it must not allocate or
    // touch thread-local state, both shared with this process's threads)
    // and never returns. SIGCHLD makes it an ordinary child, reaped by
    // whoever inherits it.
    let pid = unsafe {
        libc::clone(
            teardown,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_FILES | libc::SIGCHLD,
            parent as usize as *mut c_void,
        )
    };
    pid > 0
}

/// The teardown process: drops to idle priority and waits to be killed
/// when its parent dies; its death releases the VM.
extern "C" fn teardown(parent: *mut c_void) -> libc::c_int {
    let parent = parent as usize as libc::pid_t;
    // SAFETY: system calls on plain values through `syscall`, which
    // allocates nothing; the only thread-local state it could touch is
    // errno (that of the thread that started this process, which may
    // still run), should a call fail: with valid arguments none fails but
    // `sched_setscheduler` where a policy forbids SCHED_IDLE, whose error
    // would only overwrite a value that thread reads right after a failed
    // call of its own; with every signal blocked, `pause` only ends with
    // the process.
    unsafe {
        // No signal handler of the parent's runs here; SIGKILL can't be
        // blocked.
        let all: u64 = !0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all as *const u64,
            std::ptr::null_mut::<u64>(),
            size_of::<u64>(),
        );
        // The teardown is background work: at idle priority it never
        // takes a CPU from the next run, which starts as this one exits.
        let param = libc::sched_param { sched_priority: 0 };
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            libc::SCHED_IDLE,
            &param as *const libc::sched_param,
        );
        libc::syscall(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The parent may have died before the line above.
        if libc::syscall(libc::SYS_getppid) as libc::pid_t != parent {
            libc::syscall(libc::SYS_exit_group, 0);
        }
        loop {
            libc::syscall(libc::SYS_pause);
        }
    }
}
