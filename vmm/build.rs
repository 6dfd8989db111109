//! Builds the guest agent with a nested cargo and hands its path to the
//! crate (`WISP_AGENT_ELF`), so `cargo build` builds host and guest together.
//!
//! The agent is its own workspace (freestanding, `panic = "abort"`, patched
//! crates) and always builds in release: a debug guest would make every test
//! slow without making the host any easier to debug. Its target dir is
//! `<target>/agent`, shared by every host profile and by clippy.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let agent_dir = manifest_dir.join("../agent");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../target"))
        .join("agent");

    for path in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "linker.ld",
        "memfd-stub",
    ] {
        println!("cargo:rerun-if-changed={}", agent_dir.join(path).display());
    }
    for shared in [
        "../abi/src",
        "../engine/src",
        "../vfs/src",
        "../abi/Cargo.toml",
        "../engine/Cargo.toml",
        "../vfs/Cargo.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            manifest_dir.join(shared).display()
        );
    }

    // `cargo fuzz` builds with `--cfg fuzzing` (and nightly, sanitizers): the
    // fuzz targets (fuzz/) drive the host side of the channel without a VM,
    // so they get an empty agent instead of a nested guest build that would
    // also rebuild the shared `<target>/agent` with another compiler.
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
        let elf = out_dir.join("no-agent");
        std::fs::write(&elf, b"").expect("write the empty agent");
        println!("cargo:rustc-env=WISP_AGENT_ELF={}", elf.display());
        println!("cargo:rustc-env=WISP_AGENT_HASH={:016x}", fnv1a(b""));
        println!("cargo:rustc-env=WISP_AGENT_WASMTIME_VERSION=none");
        return;
    }

    // The guest runs on the host's architecture; the target is named so
    // that a `build.target` in the host's cargo config (this repository's
    // names one) does not move the agent's output.
    let triple = std::env::var("HOST").expect("set by cargo");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&agent_dir)
        .args(["build", "--release", "--locked", "--target", &triple])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings (clippy's wrapper, host RUSTFLAGS, a
    // cross target) must not leak into the guest build.
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_MANIFEST_DIR",
        "CARGO_PKG_NAME",
    ] {
        cmd.env_remove(var);
    }
    // Empty, it also overrides the flags the host's cargo config gives its
    // own executables (static linking): the agent links itself.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "");
    let status = cmd.status().expect("failed to run cargo for the agent");
    if !status.success() {
        panic!("building the guest agent failed ({status}); see the output above");
    }
    let elf = target_dir.join(&triple).join("release/wisp-agent");
    assert!(
        Path::new(&elf).exists(),
        "agent ELF missing at {}",
        elf.display()
    );
    println!("cargo:rustc-env=WISP_AGENT_ELF={}", elf.display());
    let image = std::fs::read(&elf).expect("read the agent ELF");
    println!("cargo:rustc-env=WISP_AGENT_HASH={:016x}", fnv1a(&image));
    println!(
        "cargo:rustc-env=WISP_AGENT_WASMTIME_VERSION={}",
        locked_version(&agent_dir.join("Cargo.lock"), "wasmtime")
    );
}

/// FNV-1a, 64-bit: identifies the agent build inside snapshots.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The version of `package` in a Cargo.lock: what is really inside the
/// guest, recorded in snapshots.
fn locked_version(lock: &Path, package: &str) -> String {
    let text = std::fs::read_to_string(lock).expect("agent/Cargo.lock is committed");
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == format!("name = \"{package}\"") {
            if let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = ")) {
                return version.trim_matches('"').to_string();
            }
        }
    }
    panic!("{package} not found in {}", lock.display());
}
