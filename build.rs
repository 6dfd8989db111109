//! Links the `wisp` executable position-dependent (non-PIE).
//!
//! A PIE is relocated by the dynamic loader at every start: ~36,000
//! relocations over ~600 KiB of tables (vtables, wasmtime's and
//! Cranelift's), every page of which is a copy-on-write fault. On the
//! development host that is ~0.45 ms of CPU per process (1.4 M cycles in
//! the loader against 0.18 M), a quarter of what a cached `wisp run` may
//! cost in all (README, "Running a module", and docs/HARDENING.md for what
//! is given up). `WISP_PIE=1` at build time keeps the PIE.

fn main() {
    println!("cargo:rerun-if-env-changed=WISP_PIE");
    let pie = std::env::var_os("WISP_PIE").is_some_and(|v| v != "0");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux && !pie {
        // Only the executables: the test harnesses stay as they are. The
        // compiler still emits position-independent code, which links fine
        // at a fixed address.
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
