//! The wasmtime configuration shared by the host and the guest.
//!
//! The host compiles modules ahead of time with Cranelift
//! (`Engine::precompile_module`) and the agent inside the micro-VM loads
//! them with a `no_std` runtime that has no compiler. Wasmtime refuses an
//! artifact whose tunables differ from the loading engine's, so both sides
//! build their `Config` here and cannot drift.
#![no_std]
#![forbid(unsafe_code)]

use wasmtime::Config;

/// Deepest native stack that wasm code may use inside the guest, in bytes.
/// The agent's stack (see `wisp_abi::layout`) is sized well above this.
pub const MAX_WASM_STACK: usize = 1 << 20;

/// The configuration every wisp engine starts from.
///
/// The guest has no virtual-memory syscalls and no signal handlers, so linear
/// memories are plain heap allocations (no reservation, no guard pages) and
/// out-of-bounds accesses are caught by explicit bounds checks that the
/// compiler emits. Proposals that need threads, GC or stack switching are off
/// (the `threads`, `gc` and `component-model` cargo features are never enabled
/// on either side): the agent runs one single-threaded core module per VM.
pub fn config() -> Config {
    let mut config = Config::new();
    config
        .memory_reservation(0)
        .memory_guard_size(0)
        .memory_reservation_for_growth(0)
        .memory_init_cow(false)
        .signals_based_traps(false)
        .max_wasm_stack(MAX_WASM_STACK)
        .wasm_gc(false)
        .wasm_stack_switching(false);
    config
}
