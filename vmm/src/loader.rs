//! Places the guest in memory: the agent ELF (via `linux-loader`), the
//! precompiled module and the files image after it, and the boot record.

use std::io::Cursor;

use linux_loader::loader::{elf::Elf, KernelLoader};
use vm_memory::GuestAddress;
use wisp_abi::boot::{BootInfo, TestMode, BOOT_MAGIC};
use wisp_abi::layout::*;

use crate::error::{ConfigError, Error, Result};
use crate::memory::{self, GuestRam};

/// The agent, built by `build.rs` for this exact ABI.
pub static AGENT_ELF: &[u8] = include_bytes!(env!("WISP_AGENT_ELF"));

/// Heap the agent needs beyond the module for wasmtime's own structures.
const MIN_HEAP: u64 = 4 << 20;
/// Alignment of the module artifact (its sections are page-aligned inside).
const MODULE_ALIGN: u64 = 0x1_0000;

/// Where things ended up.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// The agent's entry point.
    pub entry: u64,
    /// Initial RSP.
    pub stack_top: u64,
}

/// Loads the agent, `artifact` and the `files` image into `mem` and writes
/// the boot record.
pub fn load(
    mem: &GuestRam,
    mem_size: u64,
    artifact: &[u8],
    files: &[u8],
    test_mode: TestMode,
    tsc_khz: u64,
) -> Result<Placement> {
    let loaded = Elf::load(
        mem,
        None,
        &mut Cursor::new(AGENT_ELF),
        Some(GuestAddress(AGENT_BASE)),
    )
    .map_err(Error::LoadAgent)?;
    let module_addr = align_up(loaded.kernel_end, MODULE_ALIGN);
    let module_len = artifact.len() as u64;
    let files_addr = align_up(module_addr + module_len, PAGE_SIZE);
    let files_len = files.len() as u64;
    let heap_start = align_up(files_addr + files_len, PAGE_SIZE);
    let heap_end = mem_size - STACK_SIZE;
    if heap_start + MIN_HEAP > heap_end {
        return Err(ConfigError::TooSmall {
            mem_mib: mem_size >> 20,
            module_kib: module_len >> 10,
            files_kib: files_len >> 10,
        }
        .into());
    }
    memory::write(mem, module_addr, artifact)?;
    memory::write(mem, files_addr, files)?;
    let boot = BootInfo {
        magic: BOOT_MAGIC,
        abi_version: wisp_abi::ABI_VERSION,
        test_mode: test_mode as u32,
        mem_size,
        heap_start,
        heap_end,
        module_addr,
        module_len,
        tsc_khz,
        files_addr: if files.is_empty() { 0 } else { files_addr },
        files_len,
        realtime_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    };
    memory::write(mem, BOOT_INFO_ADDR, &boot.to_bytes())?;
    Ok(Placement {
        entry: loaded.kernel_load.0,
        stack_top: mem_size,
    })
}
