//! The guest's filesystem at boot: the writable scratch `/tmp`, then the
//! read-only directories of the files image the host placed in guest
//! memory, their contents borrowed in place, and the host directories it
//! announces (served over `wisp_abi::hostfs`). Built before the snapshot
//! point, so every restore starts from it, with `/tmp` empty.

use alloc::format;
use alloc::string::String;

use wisp_abi::boot::BootInfo;
use wisp_abi::files::{self, EntryKind};
use wisp_vfs::{DirEntryKind, Foreign, Vfs};

/// The scratch directory every invocation gets.
const SCRATCH: &[u8] = b"/tmp";

/// Scratch files may take this share of the heap (the rest is the module's
/// linear memory and the runtime's own).
const SCRATCH_SHARE: u64 = 2;

/// Mounts `/tmp` and the host's directories.
pub fn mount(boot: &BootInfo, heap: u64) -> Result<Vfs, String> {
    let mut fs = Vfs::new(heap / SCRATCH_SHARE);
    fs.mount(SCRATCH, true)
        .map_err(|e| format!("mounting {}: {e:?}", "/tmp"))?;
    if boot.files_len == 0 {
        return Ok(fs);
    }
    // SAFETY: the host placed the files image at files_addr..+files_len, in
    // memory nothing else uses and that is never written for the VM's life,
    // so borrowing it for 'static is sound.
    let image: &'static [u8] = unsafe {
        core::slice::from_raw_parts(boot.files_addr as *const u8, boot.files_len as usize)
    };
    let mut host_dirs = 0u32;
    for mount in files::mounts(image).map_err(|e| format!("{e}"))? {
        let mount = mount.map_err(|e| format!("{e}"))?;
        if mount.flags & files::MOUNT_HOST != 0 {
            // Served by the host, which numbers its directories in order.
            fs.add_foreign(Foreign::preopen(host_dirs, mount.path))
                .map_err(|e| format!("mounting a host directory: {e:?}"))?;
            host_dirs += 1;
            continue;
        }
        let fd = fs
            .mount(mount.path, false)
            .map_err(|e| format!("mounting a directory: {e:?}"))?;
        for entry in mount.entries {
            let entry = entry.map_err(|e| format!("{e}"))?;
            let kind = match entry.kind {
                EntryKind::Dir => DirEntryKind::Dir,
                EntryKind::File => DirEntryKind::File(entry.data),
                EntryKind::Symlink => DirEntryKind::Symlink(entry.data),
            };
            fs.add(fd, entry.path, kind).map_err(|e| {
                format!(
                    "adding {} to the files image: {e:?}",
                    String::from_utf8_lossy(entry.path)
                )
            })?;
        }
    }
    Ok(fs)
}
