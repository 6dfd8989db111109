//! The ready point at a program's first read of stdin
//! (`VmConfig::run_to_first_read`, `ReadyAt::FirstRead` in the ABI): what
//! the program did before the read is in the snapshot once, and every
//! restore continues inside the read with its own stdin, clock and
//! entropy. `tests/wasi/first_read.c` prints both sides.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wisp::compile::Compiler;
use wisp_vmm::{BufferIo, Error, Image, Invocation, Outcome, Vm, VmConfig};

fn artifact() -> Vec<u8> {
    common::require_kvm();
    let module = std::fs::read(common::wasi_program("first_read")).unwrap();
    Compiler::new(None).unwrap().compile(&module).unwrap()
}

fn boot_invocation(mode: &str) -> Invocation {
    Invocation {
        args: vec![b"first_read".to_vec(), b"from-boot".to_vec()],
        env: vec![format!("MODE={mode}").into_bytes()],
    }
}

fn config(mode: &str) -> VmConfig {
    VmConfig {
        run_to_first_read: Some(boot_invocation(mode)),
        ..VmConfig::default()
    }
}

/// The `key=value` fields the program printed.
fn fields(stdout: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(stdout)
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs one invocation whose own arguments differ from the boot's, which
/// the program must not see: it read its arguments at boot.
fn invoke(vm: &mut Vm, stdin: &[u8]) -> BTreeMap<String, String> {
    let invocation = Invocation {
        args: vec![b"first_read".to_vec(), b"from-request".to_vec()],
        env: vec![b"MODE=request".to_vec()],
    };
    let mut io = BufferIo::with_stdin(stdin.to_vec());
    let outcome = vm.invoke(&invocation, &mut io).unwrap();
    assert_eq!(
        outcome,
        Outcome::Exited(0),
        "{}",
        String::from_utf8_lossy(&io.stderr)
    );
    fields(&io.stdout)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn a_fresh_boot_reads_its_request_after_setting_up() {
    let mut vm = Vm::boot(config("boot"), &artifact()).unwrap();
    let init = vm.take_init_output();
    assert_eq!(
        String::from_utf8_lossy(&init.stderr),
        "set up with 2 argument(s)\n"
    );
    let seen = invoke(&mut vm, b"hello");
    assert_eq!(seen["input"], "hello");
    assert_eq!(seen["arg"], "from-boot");
    assert_eq!(seen["mode"], "boot");
    assert_eq!(seen["counter"], "2");
}

#[test]
fn restores_share_the_set_up_but_not_the_clock_entropy_or_state() {
    let mut vm = Vm::boot(config("boot"), &artifact()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snap");
    vm.snapshot(&dir, "first_read", None).unwrap();
    drop(vm);
    let image = Arc::new(Image::open(&dir).unwrap());
    // Long enough for a frozen clock to show.
    std::thread::sleep(Duration::from_millis(1100));

    let mut seen = Vec::new();
    for input in ["one", "two"] {
        let before = unix_ms();
        let mut vm = Vm::restore(&image, VmConfig::default()).unwrap();
        let fields = invoke(&mut vm, input.as_bytes());
        assert_eq!(fields["input"], input);
        let now: i64 = fields["now_ms"].parse().unwrap();
        let boot: i64 = fields["boot_ms"].parse().unwrap();
        assert!(
            now >= before - 5 && now - boot >= 1000,
            "the clock restarts at the request: {fields:?}"
        );
        seen.push(fields);
    }
    let (a, b) = (&seen[0], &seen[1]);
    assert_eq!(a["boot_random"], b["boot_random"], "the set-up is shared");
    assert_eq!(a["boot_ms"], b["boot_ms"]);
    assert_ne!(a["random"], b["random"], "entropy is per request");
    assert_eq!((a["counter"].as_str(), b["counter"].as_str()), ("2", "2"));
    assert_eq!(a["arg"], "from-boot", "arguments are the boot's");

    // Reset in place: the same again, and nothing of the last run.
    let mut vm = Vm::restore(&image, VmConfig::default()).unwrap();
    let first = invoke(&mut vm, b"three");
    vm.reset().unwrap();
    let again = invoke(&mut vm, b"four");
    assert_eq!(again["counter"], "2");
    assert_eq!(again["input"], "four");
    assert_ne!(first["random"], again["random"]);
}

#[test]
fn a_program_that_ends_before_reading_fails_the_boot_with_its_stderr() {
    let err = match Vm::boot(config("exit-early"), &artifact()) {
        Ok(_) => panic!("the boot must fail"),
        Err(e) => e,
    };
    match err {
        Error::EndedDuringInit { outcome, stderr } => {
            assert_eq!(outcome, Outcome::Exited(3));
            assert!(stderr.ends_with("giving up before reading\n"), "{stderr}");
        }
        other => panic!("{other}"),
    }
}
