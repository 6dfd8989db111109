//! Image benchmark: what deploying from an image costs, split into its
//! steps, and the cold start of the function it makes, for an image whose
//! file layer carries 10 MiB of files against one with none.
//!
//! Per deploy: import (an OCI layout tar into a fresh store), reading the
//! module (checked), unpacking the files (`Image::files`), compiling
//! (uncached, then from the artifact cache's disk level) and snapshotting
//! (boot to ready + write); then cold starts (restore from the snapshot to
//! the response of hello) and a deploy by image reference through a real
//! daemon (`PUT /v1/functions/{name}` with `{"image": …}`).
//!
//! The files go into guest memory with the module (mounted read-only at
//! `/`), so they are in the snapshot: they weigh on import, unpacking and
//! the snapshot write, and a cold start maps them lazily like the rest.
//!
//! `cargo bench --bench images [-- --runs N --cold N]` (defaults 20 deploys
//! and 200 cold starts per image). Needs `/dev/kvm`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use wisp::api::{DeployRequest, FunctionConfig};
use wisp::client::Client;
use wisp::compile::Compiler;
use wisp::daemon::images::guest_files;
use wisp_bench::daemon_process::DaemonProcess;
use wisp_bench::harness::{count_arg, require_kvm, row, runs_arg};
use wisp_images::{oci, ArtifactCache, Store, Tag};
use wisp_vmm::{BufferIo, Image, Invocation, Outcome, Vm, VmConfig};

const FILES_BYTES: usize = 10 << 20;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// 10 MiB of files: many small ones and a few large ones, like a runtime's
/// library and assets.
fn write_files(dir: &Path) {
    let mut written = 0;
    let mut i = 0usize;
    while written < FILES_BYTES {
        let size = if i.is_multiple_of(50) {
            1 << 20
        } else {
            16 << 10
        };
        let size = size.min(FILES_BYTES - written);
        let sub = dir.join(format!("lib/pkg{}", i % 20));
        std::fs::create_dir_all(&sub).expect("files dir");
        let data: Vec<u8> = (0..size).map(|b| ((b * 31 + i) % 251) as u8).collect();
        std::fs::write(sub.join(format!("file{i}.dat")), data).expect("write file");
        written += size;
        i += 1;
    }
}

fn hello_invocation() -> Invocation {
    Invocation {
        args: vec![b"hello".to_vec()],
        env: vec![],
    }
}

/// One image's measurements.
struct Case {
    label: &'static str,
    tar: PathBuf,
}

fn measure(case: &Case, module_wasm: &[u8], runs: usize, cold_runs: usize) {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut import = Vec::new();
    let mut read_module = Vec::new();
    let mut unpack = Vec::new();
    let mut compile = Vec::new();
    let mut compile_cached = Vec::new();
    let mut snapshot = Vec::new();
    let mut files_seen = (0, 0);
    let mut last_snapshot = None;
    for run in 0..runs {
        let store_dir = scratch.path().join(format!("store{run}"));
        let store = Store::open(&store_dir).expect("store");
        let t = Instant::now();
        let imported = oci::import(&store, &case.tar, None).expect("import");
        import.push(t.elapsed());

        let t = Instant::now();
        let image = store.image(&imported[0].digest).expect("image");
        let module = image.module().expect("module");
        read_module.push(t.elapsed());
        assert_eq!(module, module_wasm);

        let t = Instant::now();
        let files = image.files().expect("files");
        let guest = guest_files(&files).expect("files for the guest");
        unpack.push(t.elapsed());
        files_seen = (
            files.len(),
            files
                .iter()
                .map(|f| match &f.kind {
                    wisp_images::FileKind::File(data, _) => data.len(),
                    _ => 0,
                })
                .sum::<usize>(),
        );

        let compiler =
            Compiler::with_cache(Some(ArtifactCache::new(store.clone(), 0))).expect("compiler");
        let t = Instant::now();
        let artifact = compiler.load_or_compile(&module).expect("compile");
        compile.push(t.elapsed());
        let cached =
            Compiler::with_cache(Some(ArtifactCache::new(store.clone(), 0))).expect("compiler");
        let t = Instant::now();
        let again = cached.load_or_compile(&module).expect("cached compile");
        compile_cached.push(t.elapsed());
        assert_eq!(cached.compilations(), 0);
        assert_eq!(again, artifact);

        let dir = scratch.path().join(format!("snap{run}"));
        let t = Instant::now();
        let config = VmConfig {
            files: guest.clone(),
            ..VmConfig::default()
        };
        let mut vm = Vm::boot(config, &artifact).expect("boot");
        vm.take_init_output();
        vm.snapshot(&dir, "hello", None).expect("snapshot");
        drop(vm);
        let opened = Image::open(&dir).expect("open snapshot");
        snapshot.push(t.elapsed());
        if let Some(old) = last_snapshot.replace((Arc::new(opened), dir)) {
            let _ = std::fs::remove_dir_all(old.1);
        }
        let _ = std::fs::remove_dir_all(&store_dir);
    }
    println!(
        "{} — {} files, {:.1} MiB in files:",
        case.label,
        files_seen.0,
        files_seen.1 as f64 / f64::from(1 << 20)
    );
    let import = row("  import (OCI layout tar → store)", &import);
    let read = row("  read module (checked)", &read_module);
    let unpack = row("  unpack files, lay out for the guest", &unpack);
    let compile = row("  compile (Cranelift, uncached)", &compile);
    row("  compile (artifact cache, disk hit)", &compile_cached);
    let snap = row("  snapshot (boot to ready + write)", &snapshot);
    let total = import.p50 + read.p50 + unpack.p50 + compile.p50 + snap.p50;
    println!(
        "  deploy p50 total {:.2} ms = import {:.2} + read {:.2} + files {:.2} + compile {:.2} + snapshot {:.2}",
        ms(total),
        ms(import.p50),
        ms(read.p50),
        ms(unpack.p50),
        ms(compile.p50),
        ms(snap.p50)
    );

    let (image, _dir) = last_snapshot.expect("a snapshot");
    let mut cold = Vec::with_capacity(cold_runs);
    for _ in 0..cold_runs {
        let t = Instant::now();
        let mut vm = Vm::restore(&image, VmConfig::default()).expect("restore");
        let mut io = BufferIo::new();
        let outcome = vm.invoke(&hello_invocation(), &mut io).expect("invoke");
        cold.push(t.elapsed());
        assert_eq!(outcome, Outcome::Exited(0));
        assert_eq!(io.stdout, b"hello, world!\n");
        drop(vm);
    }
    row("  cold start (restore → response)", &cold);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Deploys by image reference through a real daemon, `runs` times each.
fn daemon_deploys(tars: &[(&str, &Path)], runs: usize) {
    let daemon = DaemonProcess::start(Path::new(env!("CARGO_BIN_EXE_wisp")), None, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(&daemon.state_dir().join("images")).expect("daemon's store");
    let client = Client::new(daemon.socket());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (label, tar) in tars {
        let t = Instant::now();
        let tag = Tag::parse(&format!("bench-{label}:1")).expect("tag");
        oci::import(&store, tar, Some(&tag)).expect("import into the daemon's store");
        let import = t.elapsed();
        let request = DeployRequest::image(&tag.to_string(), FunctionConfig::default());
        let body = Bytes::from(serde_json::to_vec(&request).expect("json"));
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let r = rt
                .block_on(client.request(
                    Method::PUT,
                    &format!("/v1/functions/{label}"),
                    body.clone(),
                ))
                .expect("deploy");
            samples.push(t.elapsed());
            assert!(r.status == 200 || r.status == 201, "{r:?}");
        }
        println!(
            "{label}: import into the daemon's store {:.2} ms",
            ms(import)
        );
        row("  daemon deploy by image (resolve … snapshot)", &samples);
    }
}

fn main() {
    require_kvm();
    let runs = runs_arg(20);
    let cold_runs = count_arg("--cold", 200);
    let module = wat::parse_file(root().join("examples/hello.wat")).expect("hello.wat");
    let work = tempfile::tempdir().expect("work dir");
    let source = Store::open(&work.path().join("source")).expect("source store");
    let files = work.path().join("files");
    write_files(&files);
    source
        .build(&module, None, Some(&Tag::parse("bare:1").unwrap()))
        .expect("build bare");
    source
        .build(&module, Some(&files), Some(&Tag::parse("files:1").unwrap()))
        .expect("build with files");
    let bare_tar = work.path().join("bare.tar");
    let files_tar = work.path().join("files.tar");
    oci::export(&source, "bare:1", &bare_tar).expect("export bare");
    oci::export(&source, "files:1", &files_tar).expect("export files");

    println!(
        "wisp images benchmark: {runs} deploys and {cold_runs} cold starts per image (hello, {} MiB guest)",
        VmConfig::default().mem_size >> 20
    );
    println!("note: the files are in guest memory (read-only at /) and in the snapshot");
    let cases = [
        Case {
            label: "image without files",
            tar: bare_tar.clone(),
        },
        Case {
            label: "image with 10 MiB of files",
            tar: files_tar.clone(),
        },
    ];
    for case in &cases {
        measure(case, &module, runs, cold_runs);
    }
    println!();
    daemon_deploys(&[("bare", &bare_tar), ("files", &files_tar)], runs);
}
