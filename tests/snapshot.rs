//! Snapshots with real micro-VMs: a ready VM is written to disk, then
//! restored (in this process or another) and reset in place; every start
//! must see the state the init export left and nothing an earlier
//! invocation did. Damaged or foreign snapshots are refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use common::{stderr, stdout};
use wisp::compile::Compiler;
use wisp_vmm::{BufferIo, Error, Image, Invocation, Outcome, Prefault, Shell, Vm, VmConfig};

const PRISTINE: &str = "g=42 mem=INIT pages=1\n";

fn create(module: &str, dir: &Path) -> Output {
    let path = common::fixture(module);
    let dir = dir.to_str().unwrap();
    common::run(
        &["snapshot", "create", path.to_str().unwrap(), "-o", dir],
        b"",
    )
}

fn run_snapshot(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut all = vec!["run", "--snapshot", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    common::run(&all, stdin)
}

/// A snapshot of `module` made through the API in a fresh temp dir, with
/// the working set of a sample invocation.
fn api_snapshot(module: &str) -> (tempfile::TempDir, PathBuf) {
    snapshot_sampled(module, true)
}

/// [`api_snapshot`], recording a working set only if `sample`.
fn snapshot_sampled(module: &str, sample: bool) -> (tempfile::TempDir, PathBuf) {
    common::require_kvm();
    let source = std::fs::read(common::fixture(module)).unwrap();
    let artifact = Compiler::new(None).unwrap().compile(&source).unwrap();
    let mut vm = Vm::boot(VmConfig::default(), &artifact).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snap");
    let invocation = Invocation {
        args: vec![module.as_bytes().to_vec()],
        env: vec![],
    };
    vm.snapshot(&dir, module, sample.then_some(&invocation))
        .unwrap();
    (tmp, dir)
}

fn invoke(vm: &mut Vm, args: &[&str]) -> (wisp_vmm::Result<Outcome>, String) {
    let mut io = BufferIo::new();
    let invocation = Invocation {
        args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: vec![],
    };
    let outcome = vm.invoke(&invocation, &mut io);
    (outcome, String::from_utf8_lossy(&io.stdout).into_owned())
}

#[test]
fn every_restore_in_another_process_sees_the_init_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snap");
    let out = create("init_state.wat", &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("working set"), "{}", stderr(&out));
    for _ in 0..5 {
        let out = run_snapshot(&dir, &[], b"");
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), PRISTINE);
    }
}

#[test]
fn reset_in_place_leaves_nothing_of_the_last_invocation() {
    let (_tmp, dir) = api_snapshot("init_state.wat");
    let image = Arc::new(Image::open(&dir).unwrap());
    for prefault in [
        Prefault::None,
        Prefault::WorkingSet,
        Prefault::CopyToHugePages,
    ] {
        let config = VmConfig {
            prefault,
            ..VmConfig::default()
        };
        let mut vm = Vm::restore(&image, config).unwrap();
        for round in 0..10 {
            let (outcome, out) = invoke(&mut vm, &["init_state"]);
            assert_eq!(outcome.unwrap(), Outcome::Exited(0), "{prefault:?} {round}");
            assert_eq!(out, PRISTINE, "{prefault:?} round {round}");
            // Without a reset the VM refuses a second invocation.
            assert!(matches!(
                invoke(&mut vm, &["init_state"]).0,
                Err(Error::AlreadyUsed { restored: true })
            ));
            vm.reset().unwrap();
            assert_eq!(
                vm.first_difference_from_snapshot().unwrap(),
                None,
                "{prefault:?} round {round}: guest memory differs from the snapshot after a reset"
            );
        }
    }
}

/// A snapshot without a recorded working set learns one from the first
/// VM that teaches it: the pages its invocation wrote, nothing only read.
/// Restores that pre-copy them start from the snapshot all the same.
#[test]
fn an_image_learns_its_working_set_from_a_restored_vm() {
    let (_tmp, dir) = snapshot_sampled("init_state.wat", false);
    let image = Arc::new(Image::open(&dir).unwrap());
    assert_eq!(image.working_set().page_counts(), (0, 0));

    let mut first = Vm::restore(&image, VmConfig::default()).unwrap();
    // Nothing ran yet: nothing to learn, and the image stays untaught.
    assert!(!first.learn_working_set());
    let (outcome, out) = invoke(&mut first, &["init_state"]);
    assert_eq!(outcome.unwrap(), Outcome::Exited(0));
    assert_eq!(out, PRISTINE);
    assert!(first.learn_working_set());
    let (read, written) = image.working_set().page_counts();
    assert_eq!(read, 0, "pages only read are not pre-faulted");
    assert!(written > 0);
    // Learned once: another VM teaches nothing.
    assert!(!first.learn_working_set());

    let config = VmConfig {
        prefault: Prefault::WorkingSet,
        ..VmConfig::default()
    };
    let mut vm = Vm::restore(&image, config).unwrap();
    for round in 0..3 {
        let (outcome, out) = invoke(&mut vm, &["init_state"]);
        assert_eq!(outcome.unwrap(), Outcome::Exited(0), "round {round}");
        assert_eq!(out, PRISTINE, "round {round}");
        vm.reset().unwrap();
        assert_eq!(vm.first_difference_from_snapshot().unwrap(), None);
    }

    // A recorded working set is never replaced by a learned one.
    let (_tmp, dir) = api_snapshot("init_state.wat");
    let recorded = Arc::new(Image::open(&dir).unwrap());
    let before = recorded.working_set().clone();
    assert_ne!(before.page_counts(), (0, 0));
    let mut vm = Vm::restore(&recorded, VmConfig::default()).unwrap();
    assert_eq!(invoke(&mut vm, &["init_state"]).1, PRISTINE);
    assert!(!vm.learn_working_set());
    assert_eq!(recorded.working_set(), &before);
}

/// A function that writes much of the snapshot's data in a 2 MiB block
/// makes the block hot: restores that pre-fault copy it whole into a huge
/// page, and their resets copy it back whole, leaving nothing of the
/// invocation behind.
#[test]
fn hot_blocks_are_copied_whole_and_reset_whole() {
    const PRISTINE_SUM: &str = "sum=1024\n";
    let (_tmp, dir) = snapshot_sampled("hot_block.wat", false);
    let image = Arc::new(Image::open(&dir).unwrap());
    let mut first = Vm::restore(&image, VmConfig::default()).unwrap();
    assert_eq!(invoke(&mut first, &["hot_block"]).1, PRISTINE_SUM);
    assert!(first.learn_working_set());
    let hot = image.working_set().hot.clone();
    // 4 MiB written: at least the two blocks wholly inside it.
    assert!(hot.len() >= 2, "{:?}", image.working_set());

    let config = VmConfig {
        prefault: Prefault::WorkingSet,
        ..VmConfig::default()
    };
    let mut vm = Vm::restore(&image, config).unwrap();
    assert!(vm.restore_timings().pages_ahead >= hot.len() as u64 * 512);
    // The copies are this VM's own memory.
    assert!(vm.private_bytes() >= hot.len() as u64 * (2 << 20));
    for round in 0..3 {
        let (outcome, out) = invoke(&mut vm, &["hot_block"]);
        assert_eq!(outcome.unwrap(), Outcome::Exited(0), "round {round}");
        assert_eq!(out, PRISTINE_SUM, "round {round}");
        vm.reset().unwrap();
        assert_eq!(
            vm.first_difference_from_snapshot().unwrap(),
            None,
            "round {round}: guest memory differs from the snapshot after a reset"
        );
    }
    // A VM that is never reset copies them too, and shares the image.
    let config = VmConfig {
        prefault: Prefault::WorkingSet,
        resettable: false,
        ..VmConfig::default()
    };
    let mut once = Vm::restore(&image, config).unwrap();
    assert_eq!(invoke(&mut once, &["hot_block"]).1, PRISTINE_SUM);

    // A recorded working set keeps its hot blocks in the snapshot.
    let (_tmp, dir) = snapshot_sampled("hot_block.wat", true);
    let recorded = Image::open(&dir).unwrap();
    assert!(recorded.working_set().hot.len() >= 2);
}

/// Resets queue the registers for KVM to load at the next run
/// (`KVM_CAP_SYNC_REGS`) rather than setting them with ioctls that cost
/// ~10 µs each on PVM; every reset test here then exercises that path.
#[test]
fn resets_take_the_queued_register_path_on_this_host() {
    common::require_kvm();
    assert!(
        wisp_vmm::has_sync_regs(),
        "KVM here lacks KVM_CAP_SYNC_REGS: resets fall back to SET_REGS/SET_SREGS and a quiescing run"
    );
}

#[test]
fn memory_touched_in_large_holes_is_dropped_at_reset() {
    // The module grows its linear memory by 16 MiB and writes every page of
    // it: memory the snapshot holds nothing in, which KVM does not log.
    let (_tmp, dir) = api_snapshot("touch_16m.wat");
    let image = Arc::new(Image::open(&dir).unwrap());
    let mut vm = Vm::restore(&image, VmConfig::default()).unwrap();
    assert_eq!(vm.unlogged_resident_bytes().unwrap(), 0);
    for round in 0..3 {
        let (outcome, _) = invoke(&mut vm, &["touch_16m"]);
        assert_eq!(outcome.unwrap(), Outcome::Exited(0), "round {round}");
        let touched = vm.unlogged_resident_bytes().unwrap();
        assert!(
            touched >= 8 << 20,
            "round {round}: only {touched} bytes of the unlogged holes touched"
        );
        vm.reset().unwrap();
        assert_eq!(vm.unlogged_resident_bytes().unwrap(), 0, "round {round}");
        assert_eq!(
            vm.first_difference_from_snapshot().unwrap(),
            None,
            "round {round}: guest memory differs from the snapshot after a reset"
        );
    }
}

#[test]
fn restore_into_a_precreated_shell() {
    let (_tmp, dir) = api_snapshot("init_state.wat");
    let image = Arc::new(Image::open(&dir).unwrap());
    let shells: Vec<Shell> = (0..3).map(|_| Shell::new().unwrap()).collect();
    for shell in shells {
        let mut vm = Vm::restore_in(shell, &image, VmConfig::default()).unwrap();
        let (outcome, out) = invoke(&mut vm, &["init_state"]);
        assert_eq!(outcome.unwrap(), Outcome::Exited(0));
        assert_eq!(out, PRISTINE);
    }
}

#[test]
fn a_used_vm_recycled_as_a_shell_restores_cleanly() {
    let (_tmp, dir) = api_snapshot("init_state.wat");
    let image = Arc::new(Image::open(&dir).unwrap());
    let mut vm = Vm::restore(&image, VmConfig::default()).unwrap();
    let (_tmp2, hello_dir) = api_snapshot("../../examples/hello.wat");
    let hello = Arc::new(Image::open(&hello_dir).unwrap());
    for _ in 0..5 {
        let (outcome, out) = invoke(&mut vm, &["init_state"]);
        assert_eq!(outcome.unwrap(), Outcome::Exited(0));
        assert_eq!(out, PRISTINE);
        // The shell keeps the RAM registered, for this image only.
        let shell = vm.into_shell().unwrap();
        assert!(shell.holds_memory_for(&image));
        assert!(!shell.holds_memory_for(&hello));
        vm = Vm::restore_in(shell, &image, VmConfig::default()).unwrap();
        assert_eq!(vm.first_difference_from_snapshot().unwrap(), None);
        // The kept slots log the new guest's writes: a reset undoes them.
        assert_eq!(invoke(&mut vm, &["init_state"]).1, PRISTINE);
        vm.reset().unwrap();
        assert_eq!(vm.first_difference_from_snapshot().unwrap(), None);
    }
    // A shell from one function's VM serves another function's snapshot,
    // after unregistering the memory it kept.
    let shell = vm.into_shell().unwrap();
    let mut vm = Vm::restore_in(shell, &hello, VmConfig::default()).unwrap();
    assert_eq!(vm.first_difference_from_snapshot().unwrap(), None);
    assert_eq!(invoke(&mut vm, &["hello"]).1, "hello, world!\n");
    let mut shell = vm.into_shell().unwrap();
    assert!(shell.holds_memory_for(&hello));
    shell.forget_memory().unwrap();
    assert!(!shell.holds_memory());
    let mut vm = Vm::restore_in(shell, &image, VmConfig::default()).unwrap();
    assert_eq!(invoke(&mut vm, &["init_state"]).1, PRISTINE);
}

/// Memory registered with a shell ahead of its snapshot (what `wisp run`'s
/// vCPU thread does while the snapshot is looked up) serves a restore of
/// any image of its size that is never reset, and a boot; a restore of
/// another size, or of a VM that is reset (its slots log writes), puts
/// its own memory in its place.
#[test]
fn memory_registered_ahead_serves_restores_and_boots() {
    let (_tmp, dir) = api_snapshot("init_state.wat");
    let image = Arc::new(Image::open(&dir).unwrap());
    let size = image.mem_size();
    let ahead = |mem_size: u64| {
        let mut shell = Shell::without_cpuid().unwrap();
        shell.register_memory(mem_size).unwrap();
        assert!(shell.holds_memory());
        // Nobody's: any image may use it, none owns it.
        assert!(!shell.holds_memory_for(&image));
        shell
    };
    let once = VmConfig {
        resettable: false,
        ..VmConfig::default()
    };
    for (mem_size, config) in [
        (size, once.clone()),
        (size * 2, once),
        (size, VmConfig::default()),
    ] {
        let resettable = config.resettable;
        let what = format!("{} MiB, resettable {resettable}", mem_size >> 20);
        let mut vm = Vm::restore_in(ahead(mem_size), &image, config).unwrap();
        assert_eq!(vm.first_difference_from_snapshot().unwrap(), None, "{what}");
        assert_eq!(invoke(&mut vm, &["init_state"]).1, PRISTINE, "{what}");
        if resettable {
            vm.reset().unwrap();
            assert_eq!(vm.first_difference_from_snapshot().unwrap(), None, "{what}");
        }
        // What the restore used is the image's now.
        assert!(vm.into_shell().unwrap().holds_memory_for(&image), "{what}");
    }
    let source = std::fs::read(common::example("hello.wat")).unwrap();
    let artifact = Compiler::new(None).unwrap().compile(&source).unwrap();
    let mut vm = Vm::boot_in(
        ahead(VmConfig::default().mem_size),
        VmConfig::default(),
        &artifact,
    )
    .unwrap();
    assert_eq!(invoke(&mut vm, &["hello"]).1, "hello, world!\n");
}

#[test]
fn a_vm_stopped_by_its_timeout_or_a_trap_resets_cleanly() {
    let (_tmp, dir) = api_snapshot("init_state.wat");
    let image = Arc::new(Image::open(&dir).unwrap());
    let config = VmConfig {
        timeout: Some(Duration::from_millis(200)),
        ..VmConfig::default()
    };
    let mut vm = Vm::restore(&image, config).unwrap();
    // Any argument makes the module dirty its state, then spin.
    let (outcome, out) = invoke(&mut vm, &["init_state", "spin"]);
    assert!(matches!(outcome, Err(Error::Timeout(_))), "{outcome:?}");
    assert_eq!(out, PRISTINE, "output before the timeout is kept");
    vm.reset().unwrap();
    assert_eq!(vm.first_difference_from_snapshot().unwrap(), None);
    let (outcome, out) = invoke(&mut vm, &["init_state"]);
    assert_eq!(outcome.unwrap(), Outcome::Exited(0));
    assert_eq!(out, PRISTINE);

    let (_tmp, dir) = api_snapshot("trap.wat");
    let image = Arc::new(Image::open(&dir).unwrap());
    let mut vm = Vm::restore(&image, VmConfig::default()).unwrap();
    let (outcome, _) = invoke(&mut vm, &["trap", "stack_overflow"]);
    assert!(
        matches!(&outcome, Ok(Outcome::Trapped(m)) if m.contains("call stack exhausted")),
        "{outcome:?}"
    );
    vm.reset().unwrap();
    assert_eq!(vm.first_difference_from_snapshot().unwrap(), None);
    let (outcome, out) = invoke(&mut vm, &["trap", "oob"]);
    assert!(
        matches!(&outcome, Ok(Outcome::Trapped(m)) if m.contains("out of bounds")),
        "{outcome:?}"
    );
    assert_eq!(out, "before trap\n");
}

#[test]
fn restored_modules_get_their_args_env_and_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = tmp.path().join("hello");
    assert!(create("../../examples/hello.wat", &hello).status.success());
    let out = run_snapshot(&hello, &["you"], b"");
    assert_eq!(stdout(&out), "hello, you!\n");

    let echo = tmp.path().join("echo");
    assert!(create("echo.wat", &echo).status.success());
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let out = run_snapshot(&echo, &[], &input);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, input);

    let args_env = tmp.path().join("args_env");
    assert!(create("args_env.wat", &args_env).status.success());
    let out = common::run(
        &[
            "run",
            "--env",
            "GREETING=hi",
            "--snapshot",
            args_env.to_str().unwrap(),
            "a",
            "b c",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("a\n") && text.contains("b c\n"), "{text}");
    assert!(text.contains("GREETING=hi"), "{text}");
}

/// Applies `damage` to a fresh copy of a snapshot and checks that running
/// it fails with one clear line containing `expect`.
fn assert_refused(damage: impl Fn(&Path), expect: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snap");
    assert!(create("init_state.wat", &dir).status.success());
    damage(&dir);
    let out = run_snapshot(&dir, &[], b"");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty(), "a refused snapshot must not run");
    assert!(err.contains(expect), "expected `{expect}` in: {err}");
    assert!(
        err.contains("recreate"),
        "the error must say what to do: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

fn edit_manifest(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    file.read_exact_at(&mut b, offset).unwrap();
    file.write_all_at(&[b[0] ^ 0x40], offset).unwrap();
}

#[test]
fn damaged_or_foreign_snapshots_are_refused() {
    // A byte of guest memory inside a data extent.
    assert_refused(
        |dir| {
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
            let page = manifest["memory"]["extents"][0]["start_page"]
                .as_u64()
                .unwrap();
            flip_byte(&dir.join("memory"), page * 4096 + 123);
        },
        "checksum",
    );
    // vCPU state.
    assert_refused(|dir| flip_byte(&dir.join("state.bin"), 40), "checksum");
    // Truncated state.
    assert_refused(
        |dir| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("state.bin"))
                .unwrap();
            f.set_len(10).unwrap();
        },
        "truncated",
    );
    // A newer format.
    assert_refused(
        |dir| edit_manifest(dir, |m| m["format_version"] = 99.into()),
        "format version 99",
    );
    // Made by another wasmtime.
    assert_refused(
        |dir| edit_manifest(dir, |m| m["compat"]["wasmtime_version"] = "47.0.0".into()),
        "wasmtime 47.0.0",
    );
    // For a CPU with a feature this one lacks.
    assert_refused(
        |dir| {
            edit_manifest(dir, |m| {
                m["cpu"]["features"]
                    .as_array_mut()
                    .unwrap()
                    .push("amx-tile".into())
            })
        },
        "amx-tile",
    );
}

#[test]
fn snapshot_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing-here");
    let out = run_snapshot(&missing, &[], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no snapshot"), "{}", stderr(&out));

    // An init export that traps fails the snapshot, and leaves nothing.
    let dir = tmp.path().join("bad");
    let out = create("init_trap.wat", &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("`wisp_init` failed"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.exists());

    // --memory is the snapshot's business.
    let good = tmp.path().join("good");
    assert!(create("init_state.wat", &good).status.success());
    let out = common::run(
        &[
            "run",
            "--memory",
            "64M",
            "--snapshot",
            good.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--memory cannot be used with --snapshot"));

    // Writing over something that is not a snapshot is refused.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"precious").unwrap();
    let out = create("init_state.wat", &file);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}

#[test]
fn a_snapshot_replaced_under_a_running_image_does_not_disturb_it() {
    let (_tmp, dir) = api_snapshot("init_state.wat");
    let image = Arc::new(Image::open(&dir).unwrap());
    // Replace the snapshot on disk with another module's.
    let out = create("../../examples/hello.wat", &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut vm = Vm::restore(&image, VmConfig::default()).unwrap();
    let (outcome, out) = invoke(&mut vm, &["init_state"]);
    assert_eq!(outcome.unwrap(), Outcome::Exited(0));
    assert_eq!(out, PRISTINE);
    let hello = Arc::new(Image::open(&dir).unwrap());
    let mut vm = Vm::restore(&hello, VmConfig::default()).unwrap();
    assert_eq!(invoke(&mut vm, &["hello"]).1, "hello, world!\n");
}

/// A restore into a shell made without a CPUID gives the vCPU the one the
/// guest booted with (the snapshot's); a capture is good only until the VM
/// runs again; a VM restored without write logging cannot be reset.
#[test]
fn restores_into_bare_shells_and_captures_go_stale() {
    let (_tmp, dir) = api_snapshot("init_state.wat");
    let image = Arc::new(Image::open(&dir).unwrap());
    let mut vm =
        Vm::restore_in(Shell::without_cpuid().unwrap(), &image, VmConfig::default()).unwrap();
    let capture = vm.capture().unwrap();
    let (outcome, out) = invoke(&mut vm, &["m"]);
    assert_eq!(outcome.unwrap(), Outcome::Exited(0));
    assert_eq!(out, PRISTINE);
    vm.reset().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let stale = vm.write_snapshot(capture, &out_dir.path().join("snap"), "m", None);
    assert!(matches!(stale, Err(Error::NotCaptured)), "{stale:?}");
    // Captured afresh, it writes a snapshot that restores.
    let capture = vm.capture().unwrap();
    vm.write_snapshot(capture, &out_dir.path().join("snap"), "m", None)
        .unwrap();
    let again = Arc::new(Image::open(&out_dir.path().join("snap")).unwrap());
    let mut vm = Vm::restore_in(
        Shell::without_cpuid().unwrap(),
        &again,
        VmConfig {
            resettable: false,
            ..VmConfig::default()
        },
    )
    .unwrap();
    let (_, out) = invoke(&mut vm, &["m"]);
    assert_eq!(out, PRISTINE);
    assert!(matches!(
        vm.reset(),
        Err(Error::Config(wisp_vmm::ConfigError::NotResettable))
    ));
}
