//! A misbehaving guest ends its own run with a typed error and nothing
//! else. The agent misbehaves on purpose when booted with a `TestMode`.

mod common;

use std::time::Duration;

use wisp::compile::Compiler;
use wisp_vmm::{BufferIo, Error, Invocation, Outcome, TestMode, Vm, VmConfig};

fn artifact() -> Vec<u8> {
    common::require_kvm();
    let module = std::fs::read(common::fixture("exit_code.wat")).unwrap();
    Compiler::new(None).unwrap().compile(&module).unwrap()
}

fn boot(test_mode: TestMode) -> wisp_vmm::Result<Vm> {
    boot_with(test_mode, &artifact())
}

/// The output limit of the test VMs: far below what `OversizedOutput`
/// writes.
const MAX_OUTPUT: u64 = 100_000;

fn boot_with(test_mode: TestMode, artifact: &[u8]) -> wisp_vmm::Result<Vm> {
    let config = VmConfig {
        test_mode,
        boot_timeout: Duration::from_secs(2),
        max_output: MAX_OUTPUT,
        ..VmConfig::default()
    };
    Vm::boot(config, artifact)
}

/// Boots `mode`, which must fail with a protocol error mentioning `what`.
fn protocol_error(mode: TestMode, what: &str) {
    match boot(mode) {
        Err(Error::Protocol(m)) if m.contains(what) => {}
        Err(e) => panic!("{mode:?}: expected a protocol error about `{what}`, got: {e}"),
        Ok(_) => panic!("{mode:?}: the guest booted"),
    }
}

/// What each hostile mode must end with (checked by
/// `every_hostile_guest_fails_alone_and_a_good_one_still_runs`).
fn expected(mode: TestMode, err: &Error) -> bool {
    use TestMode::*;
    let protocol = |what: &str| matches!(err, Error::Protocol(m) if m.contains(what));
    match mode {
        None | UnknownKindAfterRequest => false,
        BogusPort => protocol("unknown I/O port 0x3f8"),
        BogusPointer | BogusLength | TxOverlapsRing => protocol("outside the tx buffers"),
        PageFault => matches!(err, Error::GuestFault { vector: 14, .. }),
        PrivilegedInstruction => matches!(err, Error::GuestFault { vector: 13, .. }),
        Spin | SleepForever => matches!(err, Error::Timeout(_)),
        PortWidth => protocol("I/O port 0x10 written with 1 byte(s); it takes 4"),
        PortRead => protocol("read from I/O port 0x10"),
        ForgedFault => protocol("fault port written outside an exception"),
        FaultBadVector => protocol("bad vector 200"),
        PanicHugeLength => matches!(err, Error::AgentPanic(m) if m.len() == 4096),
        DescriptorLoop => protocol("tx descriptors must be single"),
        IndirectDescriptor => protocol("indirect"),
        AvailIndexJump => matches!(err, Error::Protocol(_)),
        RxDescriptorLoop => protocol("rx descriptors must be single"),
        RxIntoRing | RxIntoPageTables | RxIntoBootInfo | RxIntoModule | RxHugeLength => {
            protocol("outside the rx buffers")
        }
        UnknownKind => protocol("unknown message kind 0x77"),
        HeaderLongerThanDescriptor => protocol("message length 100 exceeds its buffer"),
        HeaderShorterThanDescriptor => protocol("must agree"),
        TruncatedHeader => protocol("message truncated"),
        TruncatedExit => protocol("bad exit message"),
        WrongDirection => protocol("unexpected Request message"),
        OversizedOutput => matches!(err, Error::OutputLimit(MAX_OUTPUT)),
        MessageAfterExit => protocol("Stdout after the final message"),
    }
}

fn invocation() -> Invocation {
    Invocation {
        args: vec![b"m".to_vec(), b"7".to_vec()],
        env: vec![],
    }
}

/// A well-behaved guest runs to its exit code and output.
fn runs_fine(artifact: &[u8]) {
    let mut vm = boot_with(TestMode::None, artifact).expect("boot");
    let mut io = BufferIo::new();
    assert_eq!(
        vm.invoke(&invocation(), &mut io).unwrap(),
        Outcome::Exited(7)
    );
    assert_eq!(io.stdout, b"to stdout\n");
}

#[test]
fn unknown_port_is_a_protocol_error() {
    let err = boot(TestMode::BogusPort).err().expect("must fail");
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("unknown I/O port 0x3f8")),
        "{err}"
    );
}

#[test]
fn descriptor_pointing_outside_the_buffers_is_rejected() {
    let err = boot(TestMode::BogusPointer).err().expect("must fail");
    assert!(matches!(err, Error::Protocol(_)), "{err}");
}

#[test]
fn descriptor_with_a_huge_length_is_rejected() {
    let err = boot(TestMode::BogusLength).err().expect("must fail");
    assert!(matches!(err, Error::Protocol(_)), "{err}");
}

#[test]
fn page_fault_is_reported_with_its_address() {
    let err = boot(TestMode::PageFault).err().expect("must fail");
    match err {
        Error::GuestFault {
            vector: 14,
            fault_addr: Some(8),
            rip,
            ..
        } => assert!(rip >= 0x200000, "rip {rip:#x}"),
        other => panic!("expected #PF at 0x8, got {other}"),
    }
}

#[test]
fn privileged_instruction_is_a_general_protection_fault() {
    let err = boot(TestMode::PrivilegedInstruction)
        .err()
        .expect("must fail");
    assert!(matches!(err, Error::GuestFault { vector: 13, .. }), "{err}");
}

#[test]
fn spinning_agent_hits_the_boot_timeout() {
    let started = std::time::Instant::now();
    let err = boot(TestMode::Spin).err().expect("must fail");
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_secs(2)),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn well_behaved_guest_still_runs_after_misbehaving_ones() {
    let _ = boot(TestMode::PageFault);
    let mut vm = boot(TestMode::None).expect("boot");
    let mut io = BufferIo::new();
    let outcome = vm
        .invoke(
            &Invocation {
                args: vec![b"m".to_vec(), b"7".to_vec()],
                env: vec![],
            },
            &mut io,
        )
        .unwrap();
    assert_eq!(outcome, Outcome::Exited(7));
    assert_eq!(io.stdout, b"to stdout\n");
    assert_eq!(io.stderr, b"to stderr\n");
    let again = vm.invoke(&Invocation::default(), &mut io).unwrap_err();
    assert!(
        matches!(again, Error::Config(_)),
        "a VM serves one invocation: {again}"
    );
}

#[test]
fn memory_size_is_validated() {
    for bad in [0, 3 << 20, 15 << 20, 5 << 30] {
        let config = VmConfig {
            mem_size: bad,
            ..VmConfig::default()
        };
        let err = Vm::boot(config, &artifact()).err().expect("must fail");
        assert!(
            matches!(err, Error::Config(_) | Error::Memory(_)),
            "{bad}: {err}"
        );
    }
}

#[test]
fn port_writes_of_the_wrong_width_or_direction_are_refused() {
    protocol_error(TestMode::PortWidth, "written with 1 byte(s); it takes 4");
    protocol_error(TestMode::PortRead, "read from I/O port 0x10");
}

#[test]
fn the_fault_port_is_believed_only_from_an_exception() {
    protocol_error(
        TestMode::ForgedFault,
        "fault port written outside an exception",
    );
    protocol_error(TestMode::FaultBadVector, "bad vector 200");
}

#[test]
fn a_panic_length_is_capped_at_the_panic_page() {
    match boot(TestMode::PanicHugeLength) {
        Err(Error::AgentPanic(m)) => assert_eq!(m, "A".repeat(4096)),
        other => panic!("expected an agent panic, got {:?}", other.err()),
    }
}

#[test]
fn descriptor_chains_loops_and_indirect_tables_are_refused() {
    protocol_error(TestMode::DescriptorLoop, "tx descriptors must be single");
    protocol_error(TestMode::RxDescriptorLoop, "rx descriptors must be single");
    protocol_error(TestMode::IndirectDescriptor, "indirect");
}

#[test]
fn an_avail_index_far_past_the_queue_is_refused() {
    let err = boot(TestMode::AvailIndexJump).err().expect("must fail");
    assert!(matches!(err, Error::Protocol(_)), "{err}");
}

#[test]
fn descriptors_over_host_built_structures_are_refused() {
    // The host would write a message over these (rx) or read its own
    // ring as a message (tx).
    protocol_error(TestMode::TxOverlapsRing, "outside the tx buffers");
    for mode in [
        TestMode::RxIntoRing,
        TestMode::RxIntoPageTables,
        TestMode::RxIntoBootInfo,
        TestMode::RxIntoModule,
        TestMode::RxHugeLength,
    ] {
        protocol_error(mode, "outside the rx buffers");
    }
}

#[test]
fn malformed_messages_are_refused() {
    protocol_error(TestMode::UnknownKind, "unknown message kind 0x77");
    protocol_error(
        TestMode::HeaderLongerThanDescriptor,
        "message length 100 exceeds its buffer",
    );
    protocol_error(TestMode::HeaderShorterThanDescriptor, "must agree");
    protocol_error(TestMode::TruncatedHeader, "message truncated");
    protocol_error(TestMode::TruncatedExit, "bad exit message");
    protocol_error(TestMode::WrongDirection, "unexpected Request message");
    protocol_error(TestMode::MessageAfterExit, "Stdout after the final message");
}

#[test]
fn oversized_output_stops_at_the_limit() {
    let err = boot(TestMode::OversizedOutput).err().expect("must fail");
    assert!(matches!(err, Error::OutputLimit(MAX_OUTPUT)), "{err}");
}

#[test]
fn a_sleep_request_is_bounded_by_the_deadline() {
    let started = std::time::Instant::now();
    let err = boot(TestMode::SleepForever).err().expect("must fail");
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_secs(2)),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A violation in the middle of an invocation, of a VM restored from a
/// snapshot, ends that invocation only.
#[test]
fn a_violation_mid_invocation_of_a_restored_vm_is_a_protocol_error() {
    let artifact = artifact();
    let mut vm = boot_with(TestMode::UnknownKindAfterRequest, &artifact).expect("boots fine");
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snap");
    vm.snapshot(&snapshot, "m", None).unwrap();
    let err = vm
        .invoke(&invocation(), &mut BufferIo::new())
        .expect_err("must fail");
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("unknown message kind 0x77")),
        "{err}"
    );
    let image = std::sync::Arc::new(wisp_vmm::Image::open(&snapshot).unwrap());
    let mut restored = Vm::restore(&image, VmConfig::default()).unwrap();
    let err = restored
        .invoke(&invocation(), &mut BufferIo::new())
        .expect_err("must fail");
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    // The failed VM can still be reset; it misbehaves again, as its
    // snapshot says, and nothing else is affected.
    restored.reset().unwrap();
    let err = restored
        .invoke(&invocation(), &mut BufferIo::new())
        .expect_err("must fail");
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    runs_fine(&artifact);
}

#[test]
fn every_hostile_guest_fails_alone_and_a_good_one_still_runs() {
    let artifact = artifact();
    // A well-behaved guest keeps running on another thread meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let good = {
        let (artifact, stop) = (artifact.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) || runs == 0 {
                runs_fine(&artifact);
                runs += 1;
            }
            runs
        })
    };
    for mode in TestMode::ALL {
        if matches!(
            mode,
            TestMode::None | TestMode::UnknownKindAfterRequest | TestMode::Spin
        ) {
            continue; // Spin has its own test; it only costs time here
        }
        let err = boot_with(mode, &artifact)
            .err()
            .unwrap_or_else(|| panic!("{mode:?}: the guest booted"));
        assert!(expected(mode, &err), "{mode:?}: unexpected error {err}");
        let text = err.to_string();
        eprintln!("{mode:?}: {}", &text[..text.len().min(120)]);
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    assert!(good.join().expect("the good guest's thread") > 0);
    runs_fine(&artifact);
}
