//! The micro-VM core benchmark: VM creation, fresh boot to ready, `wisp run`
//! of hello end to end, and fib(30) inside a VM against native Rust and
//! against the same module on the host's wasmtime.
//!
//! `cargo bench --bench core [-- --runs N]` (default 200 runs per row).
//! Every row boots real micro-VMs, so it needs `/dev/kvm`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wisp::compile::Compiler;
use wisp_bench::harness::{ratio, require_kvm, row, runs_arg, time};
use wisp_vmm::{BufferIo, Invocation, Outcome, Vm, VmConfig};

const FIB_N: u32 = 30;
const FIB_30: u32 = 832_040;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compile(compiler: &Compiler, path: &Path) -> Vec<u8> {
    let source = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    compiler
        .compile(&source)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn native_fib(n: u32) -> u32 {
    if n < 2 {
        n
    } else {
        native_fib(n - 1) + native_fib(n - 2)
    }
}

/// fib(30) through the host's wasmtime with wisp's shared engine config.
fn host_wasmtime_fib(runs: usize, wat: &Path) -> Vec<Duration> {
    use wasmtime::{Engine, Linker, Module, Store};
    let engine = Engine::new(&wisp_engine::config()).expect("host engine");
    let module = Module::from_file(&engine, wat).expect("fib module");
    let mut linker = Linker::new(&engine);
    for name in ["args_sizes_get", "args_get"] {
        linker
            .func_wrap(wisp_abi::wasi::MODULE, name, |_: i32, _: i32| 0i32)
            .expect("stub import");
    }
    linker
        .func_wrap(
            wisp_abi::wasi::MODULE,
            "fd_write",
            |_: i32, _: i32, _: i32, _: i32| 0i32,
        )
        .expect("stub import");
    let mut store = Store::new(&engine, ());
    let instance = linker.instantiate(&mut store, &module).expect("instance");
    let fib = instance
        .get_typed_func::<u32, u32>(&mut store, "fib")
        .expect("fib export");
    time(runs, || {
        let v = fib.call(&mut store, black_box(FIB_N)).expect("fib call");
        assert_eq!(v, FIB_30);
    })
}

fn main() {
    require_kvm();
    let runs = runs_arg(200);
    let hello_path = root().join("examples/hello.wat");
    let fib_path = root().join("tests/fixtures/fib.wat");
    let compiler = Compiler::new(None).expect("compiler");
    let hello = compile(&compiler, &hello_path);
    let fib = compile(&compiler, &fib_path);
    let config = VmConfig::default();
    println!(
        "wisp core benchmark: {runs} runs per row, guest memory {} MiB",
        config.mem_size >> 20
    );

    // Boot to ready: VM + memory + vCPU, load, agent init, instantiate.
    let mut create = Vec::with_capacity(runs);
    let mut teardown = Vec::with_capacity(runs);
    let boot = time(runs, || {
        let vm = Vm::boot(config.clone(), &hello).expect("boot");
        create.push(vm.boot_timings().create);
        let t = Instant::now();
        drop(black_box(vm));
        teardown.push(t.elapsed());
    });
    // `time` includes the drop; report boot without it.
    let boot: Vec<Duration> = boot.iter().zip(&teardown).map(|(b, t)| *b - *t).collect();
    row("VM creation (KVM VM+memory+vCPU)", &create);
    let boot = row("fresh boot to ready", &boot);
    row("VM teardown", &teardown);

    // `wisp run hello` as a user runs it: restored from its snapshot cache,
    // and booted fresh (no snapshot cache; compile cache warm).
    let cache = tempfile::tempdir().expect("cache dir");
    let wisp_run = |extra: &[&str]| {
        let status = Command::new(env!("CARGO_BIN_EXE_wisp"))
            .arg("run")
            .args(extra)
            .arg(&hello_path)
            .env("WISP_CACHE_DIR", cache.path())
            .stdout(Stdio::null())
            .status()
            .expect("spawn wisp");
        assert!(status.success(), "wisp run hello failed: {status}");
    };
    wisp_run(&[]);
    row(
        "wisp run hello (cached, end to end)",
        &time(runs, || wisp_run(&[])),
    );
    row(
        "wisp run hello (fresh boot, end to end)",
        &time(runs, || wisp_run(&["--cache-size", "0"])),
    );

    // fib(30): inside a fresh VM (invoke only) vs the host.
    let mut in_vm = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut vm = Vm::boot(config.clone(), &fib).expect("boot fib");
        let mut io = BufferIo::new();
        let invocation = Invocation {
            args: vec![b"fib".to_vec(), FIB_N.to_string().into_bytes()],
            env: vec![],
        };
        let t = Instant::now();
        let outcome = vm.invoke(&invocation, &mut io).expect("invoke fib");
        in_vm.push(t.elapsed());
        assert_eq!(outcome, Outcome::Exited(0));
        assert_eq!(io.stdout, format!("{FIB_30}\n").as_bytes());
    }
    let in_vm = row("fib(30) in the VM (invoke)", &in_vm);
    let host = row(
        "fib(30) host wasmtime, same config",
        &host_wasmtime_fib(runs, &fib_path),
    );
    let native = row(
        "fib(30) native Rust",
        &time(runs, || assert_eq!(native_fib(black_box(FIB_N)), FIB_30)),
    );

    println!();
    println!(
        "fresh boot p50 {:.2} ms (target <= 20 ms)",
        boot.p50.as_secs_f64() * 1e3
    );
    println!(
        "fib(30) p50 ratios: VM/native {:.2}x (target <= 3x), VM/host-wasmtime {:.2}x, host-wasmtime/native {:.2}x",
        ratio(&in_vm, &native),
        ratio(&in_vm, &host),
        ratio(&host, &native)
    );
}
