//! Exiting before the kernel tears the VM down.
//!
//! When a process that holds a KVM VM exits, the kernel destroys the VM
//! (its memory slots, shadow page tables, debugfs entries and worker
//! thread) and unmaps guest memory before the parent learns the exit
//! status: ~1 ms on the hosts measured, more than a cached `wisp run`
//! spends in its VM. [`exit`] hands that work to a short-lived process
//! that shares this one's memory and holds its VM's file descriptors,
//! and that the kernel kills as this one dies: the exit status reaches
//! the caller first, and the teardown follows in the background.
//!
//! This process closes stdin, stdout and stderr before it starts the
//! teardown process, which so holds none of them: a caller reading this
//! process's output sees end-of-file as it exits, whenever the teardown
//! process gets a CPU. What else that process holds (the VM, files this
//! process opened) goes when it dies. If it cannot be started, the
//! process exits the ordinary way.

use std::ffi::c_void;

/// Stack of the teardown process: it makes a few system calls.
const STACK_SIZE: usize = 64 << 10;

/// Exits with `status`; with `holds_vm`, leaves the VM's teardown to a
/// process that dies with this one (see the module docs).
pub fn exit(status: i32, holds_vm: bool) -> ! {
    if holds_vm {
        // Output is out (the caller flushed stdout; stderr is unbuffered).
        for fd in 0..=2 {
            // SAFETY: closing the standard descriptors, which nothing
            // uses after this point.
            unsafe {
                libc::close(fd);
            }
        }
        spawn_teardown();
    }
    std::process::exit(status)
}

/// Starts the teardown process; on failure the exit simply pays for the
/// teardown itself.
fn spawn_teardown() {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // Leaked: the teardown process runs on it after this process is gone.
    let stack: &'static mut [u8] = Box::leak(vec![0u8; STACK_SIZE].into_boxed_slice());
    // The stack grows down from its 16-byte-aligned top.
    let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;
    // SAFETY: the child runs `teardown` on its own leaked stack, sharing
    // this process's memory (CLONE_VM) but with its own copy of the
    // descriptor table; `teardown` makes only raw system calls (it must
    // not allocate or touch thread-local state, both shared with the
    // exiting thread) and never returns. SIGCHLD makes it an ordinary
    // child, reaped by whoever inherits it.
    unsafe {
        libc::clone(
            teardown,
            top as *mut c_void,
            libc::CLONE_VM | libc::SIGCHLD,
            parent as usize as *mut c_void,
        );
    }
    // A failed clone (-1) leaves the teardown to this process's exit.
}

/// The teardown process: drops to idle priority and waits to be killed
/// when its parent dies; its death releases the VM.
extern "C" fn teardown(parent: *mut c_void) -> libc::c_int {
    let parent = parent as usize as libc::pid_t;
    // SAFETY: system calls on plain values through `syscall`, which
    // allocates nothing; the only thread-local state it could touch is
    // errno (the exiting thread's), should a call fail.
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
