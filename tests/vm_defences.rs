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
    let config = VmConfig {
        test_mode,
        boot_timeout: Duration::from_secs(2),
        ..VmConfig::default()
    };
    Vm::boot(config, &artifact())
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
