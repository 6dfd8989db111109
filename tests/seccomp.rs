//! The invocation threads' seccomp filter: a running daemon's invocation
//! threads have it, and it really kills a process that strays from the
//! allow-list while letting the allowed calls through.

mod common;

use std::ffi::CString;

use common::daemon::{block_on, code, deploy, invoke, Daemon};
use wisp::api::FunctionConfig;
use wisp::daemon::invokers::THREAD_NAME;
use wisp::seccomp::{invocation_filter, Seccomp};

/// `(thread name, seccomp mode)` of every thread of `pid` (none once it
/// has exited; threads that end meanwhile are skipped).
fn thread_modes(pid: u32) -> Vec<(String, u32)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let dir = task.path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue;
        };
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .and_then(|m| m.trim().parse().ok());
        if let Some(mode) = mode {
            threads.push((comm.trim().to_string(), mode));
        }
    }
    threads
}

/// Runs what a daemon's invocation threads do: cold starts that create
/// their VM (no spare shells, no pool), warm resets, a trap, a timeout that
/// kicks the vCPU with a signal, a sleep, a function update.
fn exercise(daemon: &Daemon) {
    let client = daemon.client();
    block_on(async {
        let cold = FunctionConfig {
            max_ready: 0,
            ..FunctionConfig::default()
        };
        for (name, file, config) in [
            ("cold", common::example("hello.wat"), cold),
            (
                "warm",
                common::example("hello.wat"),
                FunctionConfig::default(),
            ),
            (
                "trap",
                common::fixture("trap.wat"),
                FunctionConfig::default(),
            ),
            (
                "sleep",
                common::fixture("sleep.wat"),
                FunctionConfig::default(),
            ),
            (
                "spin",
                common::fixture("spin.wat"),
                FunctionConfig {
                    timeout_ms: 100,
                    ..FunctionConfig::default()
                },
            ),
        ] {
            let r = deploy(&client, name, &file, config).await;
            assert_eq!(r.status, 201, "{name}: {r:?}");
        }
        for _ in 0..3 {
            for name in ["cold", "warm"] {
                let r = invoke(&client, name, b"").await;
                assert_eq!((r.status, &r.body[..]), (200, &b"hello, world!\n"[..]));
            }
        }
        let r = invoke(&client, "trap", b"").await;
        assert_eq!((r.status, code(&r).as_str()), (502, "function_trapped"));
        let r = invoke(&client, "spin", b"").await;
        assert_eq!((r.status, code(&r).as_str()), (504, "function_timeout"));
        let r = invoke(&client, "sleep", b"").await;
        assert_eq!((r.status, &r.body[..]), (200, &b"slept\n"[..]));
        // An update drains the old version; its pooled instances go away.
        let r = deploy(
            &client,
            "warm",
            &common::example("hello.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 200);
        let r = invoke(&client, "warm", b"").await;
        assert_eq!(r.status, 200);
    });
}

#[test]
fn every_invocation_thread_of_a_daemon_is_filtered() {
    let daemon = Daemon::start_with(&["--invocation-threads", "4", "--shells", "0"]);
    exercise(&daemon);
    let threads = thread_modes(daemon.pid());
    let invokers: Vec<_> = threads.iter().filter(|t| t.0 == THREAD_NAME).collect();
    assert_eq!(invokers.len(), 4, "{threads:?}");
    assert!(
        invokers.iter().all(|t| t.1 == 2),
        "invocation threads without a filter: {threads:?}"
    );
    // The others (HTTP, deploys, the pool manager) are not filtered.
    assert!(threads.iter().any(|t| t.0 != THREAD_NAME && t.1 == 0));
    // Still alive and serving after all of that, in kill mode.
    block_on(async {
        let r = invoke(&daemon.client(), "cold", b"").await;
        assert_eq!(r.status, 200);
    });
}

#[test]
fn seccomp_off_leaves_the_invocation_threads_unfiltered() {
    let daemon = Daemon::start_with(&["--invocation-threads", "3", "--seccomp", "off"]);
    // The socket is bound before the threads start; a served request
    // means they have.
    block_on(async {
        let r = daemon
            .client()
            .request(hyper::Method::GET, "/healthz", bytes::Bytes::new())
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    });
    let threads = thread_modes(daemon.pid());
    let invokers: Vec<_> = threads.iter().filter(|t| t.0 == THREAD_NAME).collect();
    assert_eq!(invokers.len(), 3, "{threads:?}");
    assert!(invokers.iter().all(|t| t.1 == 0), "{threads:?}");
}

/// How a forked child ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Exited(i32),
    Signalled(i32),
}

/// Forks a child that installs the invocation filter of `mode` and runs
/// `f`, then exits with its result; returns how the child ended. `f` runs
/// after a fork of a multi-threaded process: raw system calls only (no
/// allocation, no locks).
fn in_filtered_child(mode: Seccomp, f: impl FnOnce() -> i32) -> Ended {
    let program = invocation_filter(mode).unwrap().expect("a filter");
    // SAFETY: the child only makes raw system calls before it exits.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: plain system calls; the child exits through SYS_exit,
            // which the filter allows, so its status is f's result.
            unsafe {
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                if wisp_vmm::seccomp::apply(&program).is_err() {
                    libc::syscall(libc::SYS_exit, 100);
                }
                let code = f();
                libc::syscall(libc::SYS_exit, code);
            }
            unreachable!("SYS_exit returned");
        }
        pid => {
            let mut status = 0;
            // SAFETY: pid is our child; status is valid for writing.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            if libc::WIFSIGNALED(status) {
                Ended::Signalled(libc::WTERMSIG(status))
            } else {
                Ended::Exited(libc::WEXITSTATUS(status))
            }
        }
    }
}

fn killed(what: &str, f: impl FnOnce() -> i32) {
    assert_eq!(
        in_filtered_child(Seccomp::Kill, f),
        Ended::Signalled(libc::SIGSYS),
        "{what} must be killed with SIGSYS"
    );
}

#[test]
fn the_filter_allows_what_invocations_do() {
    common::require_kvm();
    let kvm = CString::new("/dev/kvm").unwrap();
    // SAFETY: a plain open; closed below.
    let kvm_fd = unsafe { libc::open(kvm.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(kvm_fd >= 0);
    let ended = in_filtered_child(Seccomp::Kill, || {
        // SAFETY: raw system calls on valid arguments.
        unsafe {
            // A KVM ioctl (KVM_CREATE_VM) on the already open /dev/kvm.
            let vm = libc::ioctl(kvm_fd, 0xae01, 0);
            if vm < 0 {
                return 1;
            }
            libc::close(vm);
            let mut seed = [0u8; 32];
            if libc::getrandom(seed.as_mut_ptr().cast(), 32, 0) != 32 {
                return 2;
            }
            let page = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if page == libc::MAP_FAILED || libc::munmap(page, 4096) != 0 {
                return 3;
            }
            let nap = libc::timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            };
            if libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &nap, std::ptr::null_mut()) != 0 {
                return 4;
            }
            let msg = b"";
            if libc::write(2, msg.as_ptr().cast(), 0) != 0 {
                return 5;
            }
        }
        0
    });
    // SAFETY: opened above.
    unsafe { libc::close(kvm_fd) };
    assert_eq!(ended, Ended::Exited(0));
}

#[test]
fn forbidden_system_calls_kill_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = CString::new(dir.path().join("written").to_str().unwrap()).unwrap();
    let true_bin = CString::new("/bin/true").unwrap();
    let argv = [true_bin.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY (all closures): raw system calls; none is harmful if it were
    // let through, and then the test fails.
    killed("socket", || unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        0
    });
    killed("execve", || unsafe {
        libc::execve(true_bin.as_ptr(), argv.as_ptr(), envp.as_ptr());
        0
    });
    killed("openat for writing", || unsafe {
        libc::openat(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT,
            0o600,
        );
        0
    });
    assert!(!dir.path().join("written").exists());
    killed("openat for reading", || unsafe {
        libc::openat(libc::AT_FDCWD, true_bin.as_ptr(), libc::O_RDONLY);
        0
    });
    killed("fork", || unsafe {
        if libc::fork() == 0 {
            libc::syscall(libc::SYS_exit, 0);
        }
        0
    });
    killed("ptrace", || unsafe {
        libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
        0
    });
    killed("an executable mapping", || unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        0
    });
    killed("a non-KVM ioctl", || unsafe {
        let mut n: libc::c_int = 0;
        libc::ioctl(0, libc::FIONREAD, &mut n);
        0
    });
    killed("madvise(MADV_DONTFORK)", || unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        libc::madvise(page, 4096, libc::MADV_DONTFORK);
        0
    });
    killed("a realtime-clock timer", || unsafe {
        let mut timer: libc::timer_t = std::ptr::null_mut();
        libc::timer_create(libc::CLOCK_REALTIME, std::ptr::null_mut(), &mut timer);
        0
    });
}

#[test]
fn log_mode_lets_a_forbidden_call_through() {
    let ended = in_filtered_child(Seccomp::Log, || {
        // SAFETY: a plain socket, closed at once.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        if fd < 0 {
            return 1;
        }
        // SAFETY: fd was just opened.
        unsafe { libc::close(fd) };
        0
    });
    assert_eq!(ended, Ended::Exited(0));
}

/// `wisp run` boots and runs its VM on a filtered `wisp-vcpu` thread
/// (which the timeout's signal then stops).
#[test]
fn wisp_run_filters_its_vcpu_thread() {
    use std::process::Stdio;
    let spin = common::fixture("spin.wat");
    let child = common::wisp()
        .args(["run", "--timeout", "1s", spin.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The module spins for a second: look at the threads meanwhile (the
    // thread may be seen between its start and its filter, before any guest
    // code runs; keep looking).
    let t0 = std::time::Instant::now();
    let mut seen = None;
    while seen != Some(2) && t0.elapsed() < std::time::Duration::from_secs(20) {
        seen = thread_modes(child.id())
            .into_iter()
            .find(|t| t.0 == "wisp-vcpu")
            .map(|t| t.1);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(seen, Some(2), "the vCPU thread's seccomp mode");
    assert_eq!(out.status.code(), Some(124), "{}", common::stderr(&out));
    assert_eq!(common::stdout(&out), "spinning\n");
}
