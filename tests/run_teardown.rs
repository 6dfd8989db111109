//! `wisp run` exits before the kernel tears its VM down: a process that
//! shares its memory and holds the VM's descriptors does that, and dies
//! with it. A test binary of its own: it makes the test process a
//! subreaper, so that process is inherited and waited for here, which
//! would steal other tests' children.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{fixture, stderr, stdout};

/// Waits (up to `limit`) for an inherited process to end; returns its pid
/// and raw wait status.
fn reap_orphan(limit: Duration) -> Option<(libc::pid_t, libc::c_int)> {
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            return Some((pid, status));
        }
        if pid < 0 || Instant::now() > deadline {
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
        // outlives the run: it closed its copies of the pipes first.
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        assert_eq!(stdout(&out), "to stdout\n");
        assert_eq!(stderr(&out), "to stderr\n");
        let (pid, status) = reap_orphan(Duration::from_secs(10))
            .expect("the run left no teardown process, or one that did not end");
        assert_ne!(pid, run_pid);
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
