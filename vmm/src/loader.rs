//! Places the guest in memory: the agent ELF (via `linux-loader`), the
//! precompiled module and the files image after it, and the boot record.

use std::io::Cursor;

use linux_loader::loader::{elf::Elf, KernelLoader};
use vm_memory::GuestAddress;
use wisp_abi::boot::{BootInfo, ReadyAt, TestMode, BOOT_MAGIC};
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
    ready_at: ReadyAt,
    tsc_khz: u64,
) -> Result<Placement> {
    let loaded = Elf::load(
        mem,
        None,
        &mut Cursor::new(AGENT_ELF),
        Some(GuestAddress(AGENT_BASE)),
    )
    .map_err(Error::LoadAgent)?;
    let agent_end = loaded.kernel_end.max(image_end(AGENT_ELF).unwrap_or(0));
    let module_addr = align_up(agent_end, MODULE_ALIGN);
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
        ready_at: ready_at as u32,
        reserved: 0,
    };
    memory::write(mem, BOOT_INFO_ADDR, &boot.to_bytes())?;
    Ok(Placement {
        entry: loaded.kernel_load.0,
        stack_top: mem_size,
    })
}

/// The end of an ELF64's memory image: the highest `p_paddr + p_memsz` of
/// its loadable segments. linux-loader's `kernel_end` skips segments with
/// no bytes in the file, such as a `.bss` alone in its segment, so the
/// module placed after it could land on the agent's zeroed statics (its
/// allocator's lock among them: the agent then spun forever at its first
/// allocation).
fn image_end(elf: &[u8]) -> Option<u64> {
    load_segments(elf)?
        .into_iter()
        .map(|s| s.addr.checked_add(s.len))
        .max()?
}

/// A loadable segment of an ELF64 image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    /// `p_paddr`.
    addr: u64,
    /// `p_memsz`.
    len: u64,
    /// `PF_W` is set.
    writable: bool,
}

/// The loadable segments of an ELF64 image; `None` if it is cut short.
fn load_segments(elf: &[u8]) -> Option<Vec<Segment>> {
    const PT_LOAD: u32 = 1;
    const PF_W: u32 = 2;
    let bytes = |at: usize, n: usize| elf.get(at..at.checked_add(n)?);
    let u16_at = |at| bytes(at, 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at| bytes(at, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |at| {
        bytes(at, 8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    let mut segments = Vec::new();
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? == PT_LOAD {
            segments.push(Segment {
                addr: u64_at(ph + 0x18)?,
                len: u64_at(ph + 0x28)?,
                writable: u32_at(ph + 4)? & PF_W != 0,
            });
        }
    }
    Some(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 header and program headers `(type, paddr, filesz, memsz)`.
    fn elf(segments: &[(u32, u64, u64, u64)]) -> Vec<u8> {
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        out[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        out[0x38..0x3a].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for &(kind, paddr, filesz, memsz) in segments {
            let mut ph = [0u8; 56];
            ph[..4].copy_from_slice(&kind.to_le_bytes());
            ph[0x18..0x20].copy_from_slice(&paddr.to_le_bytes());
            ph[0x20..0x28].copy_from_slice(&filesz.to_le_bytes());
            ph[0x28..0x30].copy_from_slice(&memsz.to_le_bytes());
            out.extend_from_slice(&ph);
        }
        out
    }

    #[test]
    fn the_image_ends_after_a_bss_with_no_file_bytes() {
        let image = elf(&[
            (1, 0x20_0000, 0x1000, 0x1000),
            (1, 0x2c_7000, 0x8a68, 0x8a68),
            // .bss alone: nothing in the file, 0xf0 bytes in memory.
            (1, 0x2d_0000, 0, 0xf0),
            (4, 0x90_0000, 0x10, 0x10), // a note: not loaded
        ]);
        assert_eq!(image_end(&image), Some(0x2d_00f0));
        assert_eq!(image_end(&image[..70]), None, "cut short");
        assert!(image_end(AGENT_ELF).is_some_and(|end| end > AGENT_BASE));
    }

    /// The contract behind [`AGENT_CODE_BLOCK`], which restores map
    /// read-only: the agent's code and read-only data lie in it, and
    /// nothing the agent writes does.
    #[test]
    fn the_agents_code_block_holds_nothing_writable() {
        let (start, len) = AGENT_CODE_BLOCK;
        let segments = load_segments(AGENT_ELF).unwrap();
        assert!(segments.iter().any(|s| !s.writable && s.addr == start));
        for s in segments {
            let end = s.addr + s.len;
            if s.writable {
                assert!(s.addr >= start + len, "writable {s:?} in the code block");
            } else {
                assert!(s.addr >= start && end <= start + len, "{s:?} outside it");
            }
        }
    }

    #[test]
    fn the_module_is_placed_after_all_of_the_agent() {
        let mem = memory::create(64 << 20).unwrap();
        load(
            &mem,
            64 << 20,
            b"module",
            b"",
            TestMode::None,
            ReadyAt::Instantiated,
            1,
        )
        .unwrap();
        // `module_addr` is at byte 40 of the boot record.
        let boot = memory::read(&mem, BOOT_INFO_ADDR, BootInfo::SIZE).unwrap();
        let module_addr = u64::from_le_bytes(boot[40..48].try_into().unwrap());
        assert!(module_addr >= image_end(AGENT_ELF).unwrap());
        assert_eq!(memory::read(&mem, module_addr, 6).unwrap(), b"module");
    }
}
