//! Snapshot restore benchmark: restore → response of a trivial function
//! (hello) in each restore mode and memory-preparation strategy, against a
//! fresh boot measured in the same run, then host memory per idle restored
//! instance.
//!
//! `cargo bench --bench restore [-- --runs N]` (default 1000 per row;
//! 1000 idle instances for the memory row). Needs `/dev/kvm`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp::compile::Compiler;
use wisp::stats::Summary;
use wisp_bench::harness::{ratio, require_kvm, row, runs_arg, time};
use wisp_bench::procfs::proc_kib;
use wisp_vmm::{BufferIo, Image, Invocation, Outcome, Prefault, Shell, Vm, VmConfig};

/// Shells are pre-created in batches of this many, outside the timing.
const SHELL_BATCH: usize = 100;

fn hello() -> Invocation {
    Invocation {
        args: vec![b"hello".to_vec()],
        env: vec![],
    }
}

/// Invokes hello and checks the response.
fn respond(vm: &mut Vm) {
    let mut io = BufferIo::new();
    let outcome = vm.invoke(&hello(), &mut io).expect("invoke");
    assert_eq!(outcome, Outcome::Exited(0));
    assert_eq!(io.stdout, b"hello, world!\n");
}

fn config(prefault: Prefault) -> VmConfig {
    VmConfig {
        prefault,
        ..VmConfig::default()
    }
}

/// New VM per restore: restore → response; teardown outside the timing.
fn new_vm(image: &Arc<Image>, prefault: Prefault, runs: usize) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            let mut vm = Vm::restore(image, config(prefault)).expect("restore");
            respond(&mut vm);
            let elapsed = t.elapsed();
            drop(vm);
            elapsed
        })
        .collect()
}

/// Samples of one restore's phases.
#[derive(Default)]
struct Phases {
    memory: Vec<Duration>,
    state: Vec<Duration>,
    invoke: Vec<Duration>,
}

impl Phases {
    fn print(&self, label: &str) {
        let p50 = |s: &[Duration]| Summary::of(s).map_or(0.0, |s| s.p50.as_secs_f64() * 1e3);
        println!(
            "  ({label}: p50 memory {:.3} ms + KVM state {:.3} ms + invoke {:.3} ms)",
            p50(&self.memory),
            p50(&self.state),
            p50(&self.invoke)
        );
    }
}

/// Restore into shells created ahead of time.
fn shell(image: &Arc<Image>, prefault: Prefault, runs: usize) -> (Vec<Duration>, Phases) {
    let mut samples = Vec::with_capacity(runs);
    let mut phases = Phases::default();
    while samples.len() < runs {
        let batch = SHELL_BATCH.min(runs - samples.len());
        let shells: Vec<Shell> = (0..batch).map(|_| Shell::new().expect("shell")).collect();
        for shell in shells {
            let t = Instant::now();
            let mut vm = Vm::restore_in(shell, image, config(prefault)).expect("restore");
            let t_invoke = Instant::now();
            respond(&mut vm);
            samples.push(t.elapsed());
            phases.invoke.push(t_invoke.elapsed());
            phases.memory.push(vm.restore_timings().memory);
            phases.state.push(vm.restore_timings().state);
        }
    }
    (samples, phases)
}

/// One VM reset in place between invocations: reset → response, and the
/// reset alone.
fn reset(image: &Arc<Image>, prefault: Prefault, runs: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut vm = Vm::restore(image, config(prefault)).expect("restore");
    respond(&mut vm);
    let mut resets = Vec::with_capacity(runs);
    let total = time(runs, || {
        let t = Instant::now();
        vm.reset().expect("reset");
        resets.push(t.elapsed());
        respond(&mut vm);
    });
    (total, resets)
}

/// Fields of /proc/self/smaps_rollup and /proc/meminfo, in KiB.
fn kib(file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(file).expect(file);
    proc_kib(&text, field).unwrap_or_else(|| panic!("{field} missing from {file}"))
}

/// Host memory now: this process's private memory and the machine's
/// available memory (which also sees KVM's kernel allocations).
fn memory_now() -> (u64, u64) {
    let private = kib("/proc/self/smaps_rollup", "Private_Dirty")
        + kib("/proc/self/smaps_rollup", "Private_Clean");
    (private, kib("/proc/meminfo", "MemAvailable"))
}

fn idle_memory(image: &Arc<Image>, count: usize) {
    let (private0, avail0) = memory_now();
    let mut vms: Vec<Vm> = (0..count)
        .map(|_| Vm::restore(image, config(Prefault::WorkingSet)).expect("restore"))
        .collect();
    let (private1, avail1) = memory_now();
    for vm in &mut vms {
        respond(vm);
        vm.reset().expect("reset");
    }
    let (private2, avail2) = memory_now();
    let per = |kib: u64| kib as f64 / count as f64;
    println!(
        "{count} idle restored instances: private {:.0} KiB each, host memory used {:.0} KiB each (incl. KVM kernel memory)",
        per(private1.saturating_sub(private0)),
        per(avail0.saturating_sub(avail1)),
    );
    println!(
        "  after one invocation + reset each: private {:.0} KiB each, host memory used {:.0} KiB each",
        per(private2.saturating_sub(private0)),
        per(avail0.saturating_sub(avail2)),
    );
    drop(black_box(vms));
}

fn main() {
    require_kvm();
    let runs = runs_arg(1000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read(root.join("examples/hello.wat")).expect("hello.wat");
    let artifact = Compiler::new(None)
        .expect("compiler")
        .compile(&source)
        .expect("compile");
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("hello");
    let mut vm = Vm::boot(VmConfig::default(), &artifact).expect("boot");
    vm.snapshot(&dir, "hello", Some(&hello()))
        .expect("snapshot");
    drop(vm);
    let image = Arc::new(Image::open(&dir).expect("open snapshot"));
    let (read, written) = image.working_set().page_counts();
    println!(
        "wisp snapshot benchmark: hello, {runs} runs per row, {} MiB guest memory, working set {read} read + {written} written pages",
        image.mem_size() >> 20
    );

    let fresh = time(runs.min(200), || {
        let mut vm = Vm::boot(VmConfig::default(), &artifact).expect("boot");
        respond(&mut vm);
    });
    let fresh = row("fresh boot → response (no snapshot)", &fresh);

    let modes = [
        ("no prefault", Prefault::None),
        ("working set", Prefault::WorkingSet),
        ("copy to huge pages", Prefault::CopyToHugePages),
    ];
    let mut best_cold: Option<(String, Summary)> = None;
    for (label, prefault) in modes {
        let a = row(&format!("new VM, {label}"), &new_vm(&image, prefault, runs));
        let (samples, phases) = shell(&image, prefault, runs);
        row(&format!("pre-created shell, {label}"), &samples);
        phases.print(label);
        let (total, resets) = reset(&image, prefault, runs);
        row(&format!("reset in place, {label}"), &total);
        row(&format!("  (reset alone, {label})"), &resets);
        if best_cold.as_ref().is_none_or(|(_, s)| a.p50 < s.p50) {
            best_cold = Some((format!("new VM, {label}"), a));
        }
    }
    if let Some((label, cold)) = best_cold {
        println!();
        println!(
            "best cold start (no instance running): {label}: p50 {:.3} ms, p99 {:.3} ms (targets 1 ms / 3 ms); {:.1}x faster than a fresh boot",
            cold.p50.as_secs_f64() * 1e3,
            cold.p99.as_secs_f64() * 1e3,
            ratio(&fresh, &cold)
        );
    }
    println!();
    idle_memory(&image, runs.min(1000));
}
