//! The fresh-boot scenario: no snapshot at all. Every invocation boots a
//! new micro-VM from the compiled module (in this process, as the daemon
//! would without snapshots), runs it, and hands the VM to a thread that
//! tears it down off the measured path.

use std::sync::mpsc;

use anyhow::{Context, Result};
use wisp::compile::Compiler;
use wisp_vmm::{BufferIo, Invocation, Outcome, Vm, VmConfig};

use super::daemon::Function;
use super::series::{measure, Series, Start};

/// Boots, runs and discards a VM `runs` times.
pub fn fresh_boot(function: &Function, runs: usize) -> Result<Series> {
    let artifact = Compiler::new(None)?
        .compile(&function.module)
        .with_context(|| format!("compiling {}", function.label))?;
    let config = VmConfig {
        mem_size: u64::from(function.memory_mib) << 20,
        ..VmConfig::default()
    };
    let invocation = Invocation {
        args: vec![function.label.clone().into_bytes()],
        env: vec![],
    };
    // Bounded: a heavy function's VMs must not pile up faster than the
    // reaper frees them.
    let (teardown, dead) = mpsc::sync_channel::<Vm>(2);
    let reaper = std::thread::spawn(move || dead.into_iter().for_each(drop));
    let runs = runs.min(function.max_runs);
    let series = measure("wisp fresh boot", &function.label, runs, || {
        let mut vm = Vm::boot(config.clone(), &artifact).map_err(|e| format!("boot: {e}"))?;
        let mut io = BufferIo::with_stdin(&function.input[..]);
        let outcome = vm.invoke(&invocation, &mut io);
        let _ = teardown.send(vm);
        match outcome.map_err(|e| format!("invoke: {e}"))? {
            Outcome::Exited(0) if io.stdout == function.expected => Ok(Start::None),
            Outcome::Exited(0) => Err(format!(
                "printed {} bytes, not the {} expected",
                io.stdout.len(),
                function.expected.len()
            )),
            other => Err(format!("ended with {other:?}")),
        }
    });
    drop(teardown);
    let _ = reaper.join();
    Ok(series)
}
