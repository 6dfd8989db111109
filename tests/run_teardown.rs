//! `wisp run` exits before the kernel tears its VM down: a process that
//! shares its memory and descriptor table, so holds the VM, does that,
//! and dies with it. A test binary of its own: it makes the test process a
//! subreaper, so that process is inherited and waited for here, which
//! would steal other tests' children.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{fixture, stderr, stdout};

/// An inherited process that ended.
struct Orphan {
    pid: libc::pid_t,
    /// Its raw wait status.
    status: libc::c_int,
    /// Its scheduling policy as it ended (`/proc/PID/stat`, field 41).
    policy: Option<u32>,
}

/// Waits (up to `limit`) for an inherited process to end, reads its
/// scheduling policy while it is a zombie, and reaps it.
fn reap_orphan(limit: Duration) -> Option<Orphan> {
    let deadline = Instant::now() + limit;
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid writes only it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above; WNOWAIT leaves the process to be reaped below.
        let rc = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid filled `info` (si_pid stays 0 if nothing ended).
        let pid = unsafe { info.si_pid() };
        if rc == 0 && pid > 0 {
            let policy = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // Fields after the command name, which may hold spaces.
                    let after = &stat[stat.rfind(')')? + 2..];
                    after.split(' ').nth(41 - 3)?.parse().ok()
                });
            let mut status = 0;
            // SAFETY: waitpid writes only `status`.
            let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(reaped, pid);
            return Some(Orphan {
                pid,
                status,
                policy,
            });
        }
        if rc < 0 || Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_vm_is_torn_down_by_a_process_that_dies_with_the_run() {
    // SAFETY: prctl with integer arguments; affects only this process.
    let subreaper = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(subreaper, 0);
    let module = fixture("exit_code.wat");
    for code in [0, 3] {
        let child = common::wisp()
            .args(["run", module.to_str().unwrap(), &code.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let run_pid = child.id() as libc::pid_t;
        // Reading to end-of-file returns although the teardown process
        // outlives the run: the pipes were closed in the table it shares.
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        assert_eq!(stdout(&out), "to stdout\n");
        assert_eq!(stderr(&out), "to stderr\n");
        let Orphan {
            pid,
            status,
            policy,
        } = reap_orphan(Duration::from_secs(10))
            .expect("the run left no teardown process, or one that did not end");
        assert_ne!(pid, run_pid);
        // At idle priority, so the teardown never delays the next run.
        assert_eq!(policy, Some(libc::SCHED_IDLE as u32));
        // Killed as its parent died, or (if the parent was gone before it
        // asked to be) ended by itself.
        let killed = libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL;
        let ended = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        assert!(killed || ended, "teardown process status {status:#x}");
        assert!(
            reap_orphan(Duration::from_millis(200)).is_none(),
            "more than one process outlived the run"
        );
    }
    // A run that never had a VM exits the ordinary way.
    let out = common::wisp()
        .args(["run", "/nonexistent/module.wasm"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(reap_orphan(Duration::from_millis(200)).is_none());
}
