//! wisp-bench: measuring wisp and its alternatives.
//!
//! - [`coldstart`]: the operator benchmark the `wisp-bench` binary runs
//!   (and `scripts/bench-coldstart` builds for);
//! - [`harness`]: what the component benchmarks in `benches/` share;
//! - [`daemon_process`]: a `wisp serve` child process for benchmarks and
//!   tests;
//! - [`procfs`]: memory figures from `/proc`.
//!
//! It depends on `wisp`, never the other way round, so the daemon links
//! none of it (no charts, no progress bars, no test helpers).
#![forbid(unsafe_code)]

pub mod coldstart;
pub mod daemon_process;
pub mod harness;
pub mod procfs;
