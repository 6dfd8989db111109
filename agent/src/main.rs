//! The wisp agent: the only program inside a wisp micro-VM.
//!
//! The host enters `_start` at ring 3 with identity-mapped memory laid out as
//! `wisp_abi::layout` describes. The agent claims its heap, starts a `no_std`
//! wasmtime engine, loads the module the host precompiled and placed in
//! memory, instantiates it, and reports `Ready` — the state a snapshot
//! captures (or, for programs that set up before reading their input, the
//! module's first read of stdin: see `ready`). It then receives one
//! request, runs `_start`, streams output and reports how the module ended.
#![no_std]
#![no_main]

extern crate alloc;

mod channel;
mod clock;
mod cpu;
mod files;
mod heap;
mod limits;
mod linear;
mod misbehave;
mod port;
mod ready;
mod rt;
mod stdio;
mod wasi;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use core::ptr::NonNull;

use wasmtime::{CustomCodeMemory, Engine, Linker, Module, Store, TypedFunc};
use wisp_abi::boot::{BootInfo, ReadyAt, TestMode, BOOT_MAGIC};
use wisp_abi::layout::BOOT_INFO_ADDR;
use wisp_abi::msg::Kind;

use crate::channel::Channel;
use crate::wasi::Ctx;
use wisp_abi::wasi::INIT_EXPORT;

/// All guest memory is mapped executable (the host builds the page tables),
/// so publishing code needs no permission change.
struct IdentityCodeMemory;

impl CustomCodeMemory for IdentityCodeMemory {
    fn required_alignment(&self) -> usize {
        1
    }

    fn publish_executable(&self, _ptr: *const u8, _len: usize) -> wasmtime::Result<()> {
        Ok(())
    }

    fn unpublish_executable(&self, _ptr: *const u8, _len: usize) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// Starts the engine and loads the precompiled module the host placed in
/// guest memory.
fn prepare(boot: &BootInfo) -> Result<(Engine, Module, Linker<Ctx>), String> {
    let mut config = wisp_engine::config();
    // SAFETY: `cpu::detect_feature` answers from cpuid/xgetbv of the CPU we
    // run on, so every feature it reports is really usable.
    unsafe { config.detect_host_feature(cpu::detect_feature) };
    config.with_custom_code_memory(Some(Arc::new(IdentityCodeMemory)));
    config.with_host_memory(Arc::new(linear::Creator));
    let engine = Engine::new(&config).map_err(|e| format!("engine: {e}"))?;

    let len = usize::try_from(boot.module_len).map_err(|_| String::from("module too large"))?;
    let ptr = NonNull::new(boot.module_addr as *mut u8).ok_or_else(|| String::from("no module"))?;
    // SAFETY: the host placed the precompiled artifact at module_addr..+len,
    // in memory nothing else uses and that stays untouched for the VM's life.
    let module =
        unsafe { Module::deserialize_raw(&engine, NonNull::slice_from_raw_parts(ptr, len)) }
            .map_err(|e| format!("loading the precompiled module: {e:#}"))?;

    let mut linker = Linker::new(&engine);
    wasi::add_to_linker(&mut linker).map_err(|e| format!("linker: {e}"))?;
    Ok((engine, module, linker))
}

/// Instantiates the module (running its start function and data
/// initialisers), runs its optional init export and finds the command
/// entry point. Everything done here is what a snapshot captures.
fn instantiate(
    store: &mut Store<Ctx>,
    linker: &Linker<Ctx>,
    module: &Module,
) -> Result<TypedFunc<(), ()>, String> {
    let instance = linker
        .instantiate(&mut *store, module)
        .map_err(|e| format!("{e:#}"))?;
    let start = instance
        .get_typed_func::<(), ()>(&mut *store, "_start")
        .map_err(|_| {
            String::from("the module has no `_start` export of type () -> () (not a WASI command)")
        })?;
    if instance.get_export(&mut *store, INIT_EXPORT).is_some() {
        let init = instance
            .get_typed_func::<(), ()>(&mut *store, INIT_EXPORT)
            .map_err(|_| format!("the `{INIT_EXPORT}` export must be a function () -> ()"))?;
        init.call(&mut *store, ())
            .map_err(|e| format!("`{INIT_EXPORT}` failed: {e:?}"))?;
    }
    Ok(start)
}

/// Rust entry point, called from `_start` in `rt`.
pub extern "C" fn agent_main() -> ! {
    // SAFETY: the host wrote a BootInfo at BOOT_INFO_ADDR before entry; it is
    // plain integers, aligned, and never written again.
    let boot = unsafe { *(BOOT_INFO_ADDR as *const BootInfo) };
    if boot.magic != BOOT_MAGIC || boot.abi_version != wisp_abi::ABI_VERSION {
        rt::fatal("boot info missing or from another ABI version");
    }
    heap::init(boot.heap_start, boot.heap_end);
    let mut channel = Channel::init();
    let test_mode = TestMode::from_u32(boot.test_mode);
    misbehave::run(test_mode, &boot, &mut channel);

    let (engine, module, linker) = match prepare(&boot) {
        Ok(parts) => parts,
        Err(e) => fail(&mut channel, &e),
    };
    let heap = (boot.heap_end - boot.heap_start) as usize;
    let fs = match files::mount(&boot, heap as u64) {
        Ok(fs) => fs,
        Err(e) => fail(&mut channel, &e),
    };
    let limits = limits::Limits::new(boot.mem_size, heap);
    let mut store = Store::new(&engine, Ctx::new(channel, limits, fs));
    store.limiter(|ctx| &mut ctx.limits);
    // Clocks run during instantiation and `wisp_init` too (a wait there
    // must end); each request restarts them at its own time.
    store.data_mut().clock = clock::Clock::start(boot.realtime_ns, boot.tsc_khz);
    let start = match instantiate(&mut store, &linker, &module) {
        Ok(start) => start,
        Err(e) => fail(&mut store.data_mut().channel, &e),
    };

    let ctx = store.data_mut();
    ready::report(ctx, boot.tsc_khz);
    ready::arm(ctx, ReadyAt::from_u32(boot.ready_at), boot.tsc_khz);
    misbehave::after_request(test_mode);

    let outcome = start.call(&mut store, ());
    let ctx = store.data_mut();
    match outcome {
        Ok(()) => ctx.channel.send(Kind::Exit, &0i32.to_le_bytes()),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<wasi::ProcExit>() {
                ctx.channel.send(Kind::Exit, &exit.0.to_le_bytes());
            } else if let Some(oom) = e.downcast_ref::<limits::OutOfMemory>() {
                ctx.channel
                    .send(Kind::OutOfMemory, format!("{oom}").as_bytes());
            } else {
                ctx.channel.send(Kind::Trap, format!("{e:?}").as_bytes());
            }
        }
    }
    halt(&mut ctx.channel)
}

/// Reports a failure to load or instantiate the module and stops.
fn fail(channel: &mut Channel, message: &str) -> ! {
    channel.send(Kind::Error, message.as_bytes());
    halt(channel)
}

/// The host never resumes a guest after its final message; if it does, the
/// agent just reports again.
fn halt(channel: &mut Channel) -> ! {
    loop {
        channel.notify();
    }
}
