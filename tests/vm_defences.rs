//! A misbehaving guest ends its own run with a typed error and nothing
//! else. The agent misbehaves on purpose when booted with a `TestMode`.

mod common;

use std::time::Duration;

use wisp::compile::Compiler;
use wisp_abi::msg::{DecodeError, Kind};
use wisp_vmm::{
    BufferIo, ConfigError, DescriptorProblem as D, Error, Invocation, Outcome, ProtocolError as P,
    TestMode, Vm, VmConfig,
};

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

/// The protocol violation a hostile `mode` must be refused with, if it is
/// one.
fn violation(mode: TestMode) -> Option<fn(&P) -> bool> {
    use TestMode::*;
    let check: fn(&P) -> bool = match mode {
        BogusPort => |e| matches!(e, P::UnknownPort(0x3f8)),
        BogusPointer | BogusLength | TxOverlapsRing => {
            |e| matches!(e, P::OutsideBuffers { queue: "tx", .. })
        }
        PortWidth => |e| {
            matches!(
                e,
                P::PortWidth {
                    port: 0x10,
                    width: 1,
                    expected: 4
                }
            )
        },
        PortRead => |e| matches!(e, P::PortRead(0x10)),
        ForgedFault => |e| matches!(e, P::ForgedFault(_)),
        FaultBadVector => |e| matches!(e, P::BadFaultVector(200)),
        DescriptorLoop => |e| {
            matches!(
                e,
                P::Descriptor {
                    queue: "tx",
                    problem: D::NotSingle(_),
                    ..
                }
            )
        },
        IndirectDescriptor => |e| {
            matches!(
                e,
                P::Descriptor {
                    queue: "tx",
                    problem: D::Indirect,
                    ..
                }
            )
        },
        AvailIndexJump => |_| true,
        RxDescriptorLoop => |e| {
            matches!(
                e,
                P::Descriptor {
                    queue: "rx",
                    problem: D::NotSingle(_),
                    ..
                }
            )
        },
        RxIntoRing | RxIntoPageTables | RxIntoBootInfo | RxIntoModule | RxHugeLength => {
            |e| matches!(e, P::OutsideBuffers { queue: "rx", .. })
        }
        UnknownKind => |e| matches!(e, P::Message(DecodeError::UnknownKind(0x77))),
        HeaderLongerThanDescriptor => |e| matches!(e, P::Message(DecodeError::BadLength(100))),
        HeaderShorterThanDescriptor => |e| matches!(e, P::LengthMismatch { .. }),
        TruncatedHeader => |e| matches!(e, P::Message(DecodeError::Truncated)),
        TruncatedExit => |e| {
            matches!(
                e,
                P::BadPayload {
                    kind: Kind::Exit,
                    ..
                }
            )
        },
        WrongDirection => |e| {
            matches!(
                e,
                P::Unexpected {
                    kind: Kind::Request,
                    ..
                }
            )
        },
        MessageAfterExit => |e| matches!(e, P::AfterFinal(Kind::Stdout)),
        _ => return Option::None,
    };
    Some(check)
}

/// Boots `mode`, which must fail with its protocol violation.
fn protocol_error(mode: TestMode) {
    let check = violation(mode).expect("a mode that breaks the protocol");
    match boot(mode) {
        Err(Error::Protocol(e)) if check(&e) => {}
        Err(e) => panic!("{mode:?}: not the expected protocol violation: {e:?}"),
        Ok(_) => panic!("{mode:?}: the guest booted"),
    }
}

/// What each hostile mode must end with (checked by
/// `every_hostile_guest_fails_alone_and_a_good_one_still_runs`).
fn expected(mode: TestMode, err: &Error) -> bool {
    use TestMode::*;
    if let Some(check) = violation(mode) {
        return matches!(err, Error::Protocol(e) if check(e));
    }
    match mode {
        PageFault => matches!(err, Error::GuestFault { vector: 14, .. }),
        PrivilegedInstruction => matches!(err, Error::GuestFault { vector: 13, .. }),
        Spin | SleepForever => matches!(err, Error::Timeout(_)),
        PanicHugeLength => matches!(err, Error::AgentPanic(m) if m.len() == 4096),
        OversizedOutput => matches!(err, Error::OutputLimit(MAX_OUTPUT)),
        _ => false,
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
    protocol_error(TestMode::BogusPort);
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
        matches!(again, Error::AlreadyUsed { restored: false }),
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
            matches!(
                err,
                Error::Config(ConfigError::MemorySize { .. } | ConfigError::MemoryAlignment(_))
            ),
            "{bad}: {err}"
        );
    }
}

#[test]
fn port_writes_of_the_wrong_width_or_direction_are_refused() {
    protocol_error(TestMode::PortWidth);
    protocol_error(TestMode::PortRead);
}

#[test]
fn the_fault_port_is_believed_only_from_an_exception() {
    protocol_error(TestMode::ForgedFault);
    protocol_error(TestMode::FaultBadVector);
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
    protocol_error(TestMode::DescriptorLoop);
    protocol_error(TestMode::RxDescriptorLoop);
    protocol_error(TestMode::IndirectDescriptor);
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
    protocol_error(TestMode::TxOverlapsRing);
    for mode in [
        TestMode::RxIntoRing,
        TestMode::RxIntoPageTables,
        TestMode::RxIntoBootInfo,
        TestMode::RxIntoModule,
        TestMode::RxHugeLength,
    ] {
        protocol_error(mode);
    }
}

#[test]
fn malformed_messages_are_refused() {
    protocol_error(TestMode::UnknownKind);
    protocol_error(TestMode::HeaderLongerThanDescriptor);
    protocol_error(TestMode::HeaderShorterThanDescriptor);
    protocol_error(TestMode::TruncatedHeader);
    protocol_error(TestMode::TruncatedExit);
    protocol_error(TestMode::WrongDirection);
    protocol_error(TestMode::MessageAfterExit);
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
        matches!(
            &err,
            Error::Protocol(P::Message(DecodeError::UnknownKind(0x77)))
        ),
        "{err:?}"
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
