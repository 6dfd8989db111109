//! The invocation threads' seccomp filter: a running daemon's invocation
//! threads have it; it refuses what is off the allow-list, kills a process
//! that reaches beyond its VMs, lets the allowed calls through, and never
//! kills for what the C library and Rust's runtime do on their own.

mod common;

use std::ffi::CString;

use common::daemon::{block_on, code, deploy, invoke, Daemon};
use wisp::api::FunctionConfig;
use wisp::daemon::invokers::THREAD_NAME;
use wisp::seccomp::{invocation_filter, Seccomp};
use wisp_vmm::seccomp::Filter;

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
    in_child_under(&invocation_filter(mode).unwrap().expect("a filter"), f)
}

/// [`in_filtered_child`] with `filter`.
fn in_child_under(filter: &Filter, f: impl FnOnce() -> i32) -> Ended {
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
                if wisp_vmm::seccomp::apply(filter).is_err() {
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

/// `f` makes one call and returns its result; the call must fail with
/// `EPERM` and the child live on.
fn denied(what: &str, f: impl FnOnce() -> libc::c_long) {
    let ended = in_filtered_child(Seccomp::Kill, || {
        let rc = f();
        // SAFETY: reads this thread's errno.
        let errno = unsafe { *libc::__errno_location() };
        match (rc, errno) {
            (-1, libc::EPERM) => 0,
            (-1, _) => 2,
            _ => 3,
        }
    });
    assert_eq!(
        ended,
        Ended::Exited(0),
        "{what} must fail with EPERM (2: another errno, 3: it succeeded)"
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
            let mut cpus: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of_val(&cpus), &mut cpus) != 0 {
                return 6;
            }
        }
        0
    });
    // SAFETY: opened above.
    unsafe { libc::close(kvm_fd) };
    assert_eq!(ended, Ended::Exited(0));
}

/// Calls off the list that give the thread no new reach fail with EPERM:
/// the C library makes some of them on its own and copes.
#[test]
fn other_system_calls_fail_with_eperm() {
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join("written");
    let path = CString::new(written.to_str().unwrap()).unwrap();
    let overcommit = CString::new("/proc/sys/vm/overcommit_memory").unwrap();
    // SAFETY (all closures): raw system calls; none is harmful if it were
    // let through, and then the test fails.
    // SAFETY: raw system calls on valid arguments, in a forked child.
    denied("openat for writing", || unsafe {
        libc::openat(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT,
            0o600,
        )
        .into()
    });
    assert!(!written.exists());
    // What glibc's malloc opens the first time it shrinks a thread's heap.
    // SAFETY: raw system calls on valid arguments, in a forked child.
    denied("openat of overcommit_memory", || unsafe {
        libc::openat(
            libc::AT_FDCWD,
            overcommit.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
        .into()
    });
    // SAFETY: raw system calls on valid arguments, in a forked child.
    denied("madvise(MADV_DONTFORK)", || unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        libc::madvise(page, 4096, libc::MADV_DONTFORK).into()
    });
    // SAFETY: raw system calls on valid arguments, in a forked child.
    denied("a realtime-clock timer", || unsafe {
        let mut timer: libc::timer_t = std::ptr::null_mut();
        libc::timer_create(libc::CLOCK_REALTIME, std::ptr::null_mut(), &mut timer).into()
    });
    // SAFETY: raw system calls on valid arguments, in a forked child.
    denied("sysinfo", || unsafe {
        let mut info: libc::sysinfo = std::mem::zeroed();
        libc::sysinfo(&mut info).into()
    });
}

/// Without the kernel's verdict cache (`wisp run`'s vCPU thread), the
/// filter decides as with it: allowed calls go through, calls off the
/// list fail with EPERM, reaching calls kill; twice, so the second call
/// of each kind is not answered by a cache either.
#[test]
fn the_uncached_filter_decides_the_same() {
    let uncached = || {
        invocation_filter(Seccomp::Kill)
            .unwrap()
            .expect("a filter")
            .uncached()
    };
    // None of these calls is harmful if it were let through.
    // SAFETY: raw system calls on valid arguments, in a forked child.
    let allowed = in_child_under(&uncached(), || unsafe {
        let ok = |rc: libc::c_long| rc >= 0;
        let tid = || libc::syscall(libc::SYS_gettid);
        let now = || {
            let mut ts: libc::timespec = std::mem::zeroed();
            libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &mut ts)
        };
        i32::from(!(ok(tid()) && ok(tid()) && ok(now()) && ok(now())))
    });
    assert_eq!(allowed, Ended::Exited(0), "gettid and clock_gettime");
    // SAFETY: raw system calls on valid arguments, in a forked child.
    let denied = in_child_under(&uncached(), || unsafe {
        let mut info: libc::sysinfo = std::mem::zeroed();
        let first = libc::sysinfo(&mut info) == -1 && *libc::__errno_location() == libc::EPERM;
        let again = libc::sysinfo(&mut info) == -1 && *libc::__errno_location() == libc::EPERM;
        i32::from(!(first && again))
    });
    assert_eq!(denied, Ended::Exited(0), "sysinfo must fail with EPERM");
    // SAFETY: raw system calls on valid arguments, in a forked child.
    let reaching = in_child_under(&uncached(), || unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        0
    });
    assert_eq!(reaching, Ended::Signalled(libc::SIGSYS), "socket must kill");
}

/// Calls that would take the thread beyond its VMs kill the process.
#[test]
fn reaching_system_calls_kill_the_process() {
    let true_bin = CString::new("/bin/true").unwrap();
    let argv = [true_bin.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY (all closures): raw system calls; none is harmful if it were
    // let through, and then the test fails.
    // SAFETY: raw system calls on valid arguments, in a forked child.
    killed("socket", || unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        0
    });
    // SAFETY: raw system calls on valid arguments, in a forked child.
    killed("execve", || unsafe {
        libc::execve(true_bin.as_ptr(), argv.as_ptr(), envp.as_ptr());
        0
    });
    // SAFETY: raw system calls on valid arguments, in a forked child.
    killed("fork", || unsafe {
        if libc::fork() == 0 {
            libc::syscall(libc::SYS_exit, 0);
        }
        0
    });
    // SAFETY: raw system calls on valid arguments, in a forked child.
    killed("ptrace", || unsafe {
        libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
        0
    });
    // SAFETY: raw system calls on valid arguments, in a forked child.
    killed("a signal to another process", || unsafe {
        libc::kill(1, 0);
        0
    });
    // SAFETY: raw system calls on valid arguments, in a forked child.
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
    // SAFETY: raw system calls on valid arguments, in a forked child.
    killed("making memory executable", || unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        libc::mprotect(page, 4096, libc::PROT_READ | libc::PROT_EXEC);
        0
    });
    // SAFETY: raw system calls on valid arguments, in a forked child.
    killed("a non-KVM ioctl", || unsafe {
        let mut n: libc::c_int = 0;
        libc::ioctl(0, libc::FIONREAD, &mut n);
        0
    });
}

/// A function that writes 1 MB to stdout and 1 MB to stderr in
/// interleaved 100-byte writes once killed a daemon in `kill` mode (glibc
/// opening a /proc file while shrinking an invocation thread's heap).
#[test]
fn interleaved_output_does_not_kill_the_daemon() {
    let daemon = Daemon::start_with(&["--invocation-threads", "2"]);
    let client = daemon.client();
    block_on(async {
        let r = deploy(
            &client,
            "interleave",
            &common::fixture("interleave.wat"),
            FunctionConfig::default(),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
        for _ in 0..6 {
            let r = invoke(&client, "interleave", b"").await;
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.body.len(), 1_000_000);
            assert!(r.body.iter().all(|&b| b == b'o'));
        }
        let r = client
            .request(hyper::Method::GET, "/healthz", bytes::Bytes::new())
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    });
    assert!(
        thread_modes(daemon.pid())
            .iter()
            .any(|t| t.0 == THREAD_NAME && t.1 == 2),
        "the daemon is not running filtered invocation threads"
    );
}

/// `wisp run` of a module that reads 160 MiB of stdin, on its filtered
/// vCPU thread in `kill` mode (past 150 MB it once died of SIGSYS).
#[test]
fn wisp_run_reads_a_large_stdin_under_the_filter() {
    let module = common::fixture("count_stdin.wat");
    let input = vec![b'x'; 160 << 20];
    let out = common::run(
        &["run", "--seccomp", "kill", module.to_str().unwrap()],
        &input,
    );
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        common::stderr(&out)
    );
    assert_eq!(common::stdout(&out), format!("{}\n", 160 << 20));
}

/// Set in the child process that [`allocations_never_trip_the_filter`]
/// starts: the child runs the workout.
const WORKOUT_ENV: &str = "WISP_TEST_ALLOCATOR_WORKOUT";
/// What the child prints when the whole workout ran.
const WORKOUT_DONE: &str = "allocator workout done";

/// Large, fragmented and interleaved allocations on threads filtered in
/// `kill` mode, as many threads as the daemon has (more than glibc's first
/// arena limit), freeing across threads: every path glibc's malloc and
/// Rust's runtime take under memory pressure, in a child process so that a
/// SIGSYS fails the test instead of killing it.
#[test]
fn allocations_never_trip_the_filter() {
    if std::env::var_os(WORKOUT_ENV).is_some() {
        allocator_workout();
        println!("{WORKOUT_DONE}");
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "allocations_never_trip_the_filter",
            "--nocapture",
        ])
        .env(WORKOUT_ENV, "1")
        // A panic on a filtered thread symbolizes its backtrace.
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(WORKOUT_DONE),
        "the workout ended with {:?} (signal {:?}; 31 is SIGSYS)\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small xorshift generator: reproducible sizes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A size from 16 bytes to 64 KiB, small ones likelier.
    fn size(&mut self) -> usize {
        let bits = 4 + self.next() % 13;
        16 + (self.next() % (1 << bits)) as usize
    }
}

fn allocator_workout() {
    const THREADS: usize = 24;
    const LARGE_THREADS: usize = 3;
    let filter = std::sync::Arc::new(invocation_filter(Seccomp::Kill).unwrap().expect("a filter"));
    // A ring: each thread sends blocks it allocated to the next, which
    // frees them (remote frees into another arena).
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS)
        .map(|_| std::sync::mpsc::channel::<Vec<Box<[u8]>>>())
        .unzip();
    let mut threads = Vec::new();
    for (i, receiver) in receivers.into_iter().enumerate() {
        let next = senders[(i + 1) % THREADS].clone();
        let filter = std::sync::Arc::clone(&filter);
        threads.push(
            std::thread::Builder::new()
                .name(format!("workout-{i}"))
                .spawn(move || {
                    // Before anything else, as the invocation threads do:
                    // the thread's first allocation happens filtered.
                    wisp_vmm::seccomp::apply(&filter).unwrap();
                    workout(i as u64 + 1, i < LARGE_THREADS, &next);
                    drop(next);
                    // Free what the previous thread sent.
                    for blocks in receiver {
                        drop(blocks);
                    }
                })
                .unwrap(),
        );
    }
    drop(senders);
    for thread in threads {
        thread.join().expect("a workout thread panicked");
    }
}

fn workout(seed: u64, large: bool, next: &std::sync::mpsc::Sender<Vec<Box<[u8]>>>) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    // Two buffers grown in interleaved 100-byte appends, as an invocation's
    // stdout and stderr are.
    for _ in 0..4 {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for _ in 0..10_000 {
            out.extend_from_slice(&[b'o'; 100]);
            err.extend_from_slice(&[b'e'; 100]);
        }
        assert_eq!(out.len() + err.len(), 2_000_000);
    }
    // Fragmentation: many sizes, every other one freed, more allocated
    // into the holes, then everything freed (the heap shrinks).
    for _ in 0..3 {
        let mut blocks: Vec<Option<Box<[u8]>>> = (0..6_000)
            .map(|_| Some(vec![1u8; rng.size()].into_boxed_slice()))
            .collect();
        for block in blocks.iter_mut().step_by(2) {
            *block = None;
        }
        for _ in 0..3_000 {
            blocks.push(Some(vec![2u8; rng.size()].into_boxed_slice()));
        }
        let sent: Vec<Box<[u8]>> = blocks
            .iter_mut()
            .step_by(7)
            .filter_map(Option::take)
            .collect();
        let _ = next.send(sent);
        drop(blocks);
    }
    // A caught panic: the runtime formats and prints it, and symbolizes a
    // backtrace (RUST_BACKTRACE=1), opening files it may not open.
    let caught = std::panic::catch_unwind(|| panic!("a panic on a filtered thread (expected)"));
    assert!(caught.is_err());
    if large {
        // One large buffer grown as a big stdin is read (mmap, mremap),
        // shrunk and freed.
        let mut input = Vec::new();
        let chunk = vec![7u8; 64 << 10];
        while input.len() < 160 << 20 {
            input.extend_from_slice(&chunk);
        }
        input.truncate(1 << 20);
        input.shrink_to_fit();
        assert_eq!(input.len(), 1 << 20);
    }
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
