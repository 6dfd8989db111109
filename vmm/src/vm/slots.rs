//! How a VM's guest RAM is registered with KVM: as memory slots, some with
//! KVM's dirty log (for resets), some without.
//!
//! A dirty-logged slot is mapped by KVM 4 KiB at a time and write-protected,
//! so every first write to a page is an exit — cheap to reset, dear to
//! touch. A restored VM's large runs of memory the snapshot holds nothing in
//! (fresh anonymous memory, see [`memory::Blocks::anonymous_ranges`]) get
//! slots of their own without the log, so the guest touches them with
//! 2 MiB mappings as a fresh VM does; a reset finds what it touched there
//! from the host's page tables instead, and drops it. So do the blocks a
//! restore copied whole into huge pages (the image's hot blocks, see
//! [`super::working_set`]), which a reset copies back whole instead, and
//! the agent's code block ([`wisp_abi::layout::AGENT_CODE_BLOCK`]), which
//! the guest may only read (its writes there exit, and end the
//! invocation): KVM maps it whole where the host does, and a reset has
//! nothing to do there.

use std::os::unix::io::AsRawFd;

use kvm_bindings::{
    kvm_clear_dirty_log, kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::ioctl::ioctl_with_ref;
use wisp_abi::layout::PAGE_SIZE;

use crate::error::{Error, Result};
use crate::memory::{self, GuestRam, PageRuns};
use crate::seccomp::KVM_CLEAR_DIRTY_LOG;
use crate::shell::Shell;

/// At most this many slots go without the dirty log (the largest holes;
/// the rest stay in logged slots, which resets handle as well): KVM's slot
/// count is limited (509 on older kernels).
const MAX_UNLOGGED: usize = 32;

/// One KVM memory slot over part of guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    /// KVM's slot number.
    id: u32,
    /// First guest-physical byte (also the offset into guest RAM).
    start: u64,
    /// Bytes.
    len: u64,
    /// What it holds, and so how a reset finds what the guest changed.
    kind: Kind,
}

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Snapshot data, mapped copy-on-write: KVM logs the guest's writes.
    Logged,
    /// Fresh anonymous memory: a reset drops whatever is present. (A VM
    /// that is never reset has one such slot over all of its memory.)
    Fresh,
    /// Snapshot data copied into huge pages: a reset copies it back whole.
    Copied,
    /// Snapshot data the guest may only read (code): registered read-only,
    /// so a reset has nothing to restore there.
    ReadOnly,
}

impl Slot {
    fn logged(&self) -> bool {
        self.kind == Kind::Logged
    }

    fn first_page(&self) -> u64 {
        self.start / PAGE_SIZE
    }

    fn pages(&self) -> u64 {
        self.len / PAGE_SIZE
    }
}

/// The slots a VM's RAM is registered as, in guest-physical order, covering
/// all of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Slots {
    slots: Vec<Slot>,
}

impl Slots {
    /// One slot over `mem_size` bytes, dirty-logged if `logged`.
    pub(crate) fn single(mem_size: u64, logged: bool) -> Slots {
        Slots {
            slots: vec![Slot {
                id: 0,
                start: 0,
                len: mem_size,
                kind: if logged { Kind::Logged } else { Kind::Fresh },
            }],
        }
    }

    /// Dirty-logged slots around unlogged ones over `holes` (fresh
    /// memory), `copied` (blocks copied whole) and `read_only` (snapshot
    /// data the guest may only read): sorted, disjoint, page-aligned byte
    /// ranges inside `mem_size`, disjoint from each other. At most the
    /// [`MAX_UNLOGGED`] largest holes are used; every other range is.
    pub(super) fn around(
        mem_size: u64,
        holes: &[(u64, u64)],
        copied: &[(u64, u64)],
        read_only: &[(u64, u64)],
    ) -> Slots {
        let mut holes = holes.to_vec();
        if holes.len() > MAX_UNLOGGED {
            holes.sort_by_key(|&(start, len)| (std::cmp::Reverse(len), start));
            holes.truncate(MAX_UNLOGGED);
        }
        let mut unlogged: Vec<(u64, u64, Kind)> = holes
            .into_iter()
            .map(|(start, len)| (start, len, Kind::Fresh))
            .chain(
                copied
                    .iter()
                    .map(|&(start, len)| (start, len, Kind::Copied)),
            )
            .chain(
                read_only
                    .iter()
                    .map(|&(start, len)| (start, len, Kind::ReadOnly)),
            )
            .collect();
        unlogged.sort_unstable_by_key(|r| r.0);
        let mut slots = Vec::with_capacity(unlogged.len() * 2 + 1);
        let mut push = |start: u64, len: u64, kind: Kind| {
            if len > 0 {
                let id = slots.len() as u32;
                slots.push(Slot {
                    id,
                    start,
                    len,
                    kind,
                });
            }
        };
        let mut at = 0;
        for (start, len, kind) in unlogged {
            push(at, start - at, Kind::Logged);
            push(start, len, kind);
            at = start + len;
        }
        push(at, mem_size - at, Kind::Logged);
        Slots { slots }
    }

    /// Registers `mem` with the shell's VM as these slots.
    pub(crate) fn attach(&self, shell: &Shell, mem: &GuestRam) -> Result<()> {
        // Every GuestRam here has exactly one region, at guest address 0.
        let region = mem.iter().next().expect("guest RAM has one region");
        let (host, size) = (region.as_ptr() as u64, region.len());
        for slot in &self.slots {
            assert!(slot.start + slot.len <= size, "slot {slot:?} past RAM");
            let region = kvm_userspace_memory_region {
                slot: slot.id,
                flags: match slot.kind {
                    Kind::Logged => KVM_MEM_LOG_DIRTY_PAGES,
                    Kind::ReadOnly => KVM_MEM_READONLY,
                    Kind::Fresh | Kind::Copied => 0,
                },
                guest_phys_addr: slot.start,
                memory_size: slot.len,
                userspace_addr: host + slot.start,
            };
            // SAFETY: the range lies inside `mem`'s live mapping (asserted
            // above); the Vm owning the shell keeps it mapped until the
            // slots are deleted or the VM fd is closed (field order: `shell`
            // drops first).
            unsafe { shell.vm.set_user_memory_region(region) }
                .map_err(Error::kvm("SET_USER_MEMORY_REGION"))?;
        }
        Ok(())
    }

    /// Deletes the slots, so the mapping can be dropped and the VM given
    /// other memory.
    pub(crate) fn detach(&self, shell: &Shell) -> Result<()> {
        for slot in &self.slots {
            let region = kvm_userspace_memory_region {
                slot: slot.id,
                flags: 0,
                guest_phys_addr: slot.start,
                memory_size: 0,
                userspace_addr: 0,
            };
            // SAFETY: a zero-sized region deletes the slot; KVM then
            // references no host memory of ours through it.
            unsafe { shell.vm.set_user_memory_region(region) }
                .map_err(Error::kvm("SET_USER_MEMORY_REGION (delete)"))?;
        }
        Ok(())
    }

    /// The pages KVM logged as written in the logged slots, as runs of
    /// guest pages. Under manual protection (see [`Shell`]) the log keeps
    /// every page written since it was last [cleared](Slots::reprotect);
    /// otherwise reading it clears it and write-protects the pages again.
    pub(super) fn dirty_pages(&self, shell: &Shell) -> Result<PageRuns> {
        let mut runs = Vec::new();
        for slot in self.slots.iter().filter(|s| s.logged()) {
            let bitmap = shell
                .vm
                .get_dirty_log(slot.id, slot.len as usize)
                .map_err(Error::kvm("GET_DIRTY_LOG"))?;
            let first = slot.first_page();
            runs.extend(
                memory::bitmap_runs(&bitmap)
                    .into_iter()
                    .map(|(page, count)| (first + page, count)),
            );
        }
        Ok(runs)
    }

    /// Clears the dirty log of `runs` (guest pages; those outside logged
    /// slots are ignored) and write-protects them again, so KVM logs their
    /// next write. Only under manual protection: otherwise reading the log
    /// did both.
    pub(super) fn reprotect(&self, shell: &Shell, runs: &[(u64, u64)]) -> Result<()> {
        if !shell.manual_dirty_log {
            return Ok(());
        }
        for slot in self.slots.iter().filter(|s| s.logged()) {
            let (first, pages) = (slot.first_page(), slot.pages());
            let mut bitmap = vec![0u64; pages.div_ceil(64) as usize];
            let mut any = false;
            for &(start, count) in runs {
                let (from, to) = (start.max(first), (start + count).min(first + pages));
                for page in from..to {
                    let bit = page - first;
                    bitmap[(bit / 64) as usize] |= 1 << (bit % 64);
                    any = true;
                }
            }
            if any {
                clear_dirty_log(shell, slot, &mut bitmap)?;
            }
        }
        Ok(())
    }

    /// Empties the dirty log of every logged slot and write-protects their
    /// pages again: for memory that now holds a snapshot whole, so nothing
    /// in it differs from the snapshot yet.
    pub(super) fn clear_log(&self, shell: &Shell) -> Result<()> {
        if shell.manual_dirty_log {
            for slot in self.slots.iter().filter(|s| s.logged()) {
                let mut all = vec![!0u64; slot.pages().div_ceil(64) as usize];
                clear_dirty_log(shell, slot, &mut all)?;
            }
            Ok(())
        } else {
            // Reading the classic log clears it and protects the pages.
            self.dirty_pages(shell).map(drop)
        }
    }

    /// The pages of the fresh-memory slots present in the host's page
    /// tables: the ones the guest (or the host) touched there.
    pub(super) fn touched_unlogged(&self, mem: &GuestRam) -> Result<PageRuns> {
        let mut runs = Vec::new();
        for slot in self.slots.iter().filter(|s| s.kind == Kind::Fresh) {
            runs.extend(memory::resident_runs(mem, slot.start, slot.len)?);
        }
        Ok(runs)
    }
}

/// Clears the pages of `slot` whose bits `bitmap` sets (a bit per page)
/// from its dirty log and write-protects them again
/// (`KVM_CLEAR_DIRTY_LOG`, under manual protection).
fn clear_dirty_log(shell: &Shell, slot: &Slot, bitmap: &mut [u64]) -> Result<()> {
    let clear = kvm_clear_dirty_log {
        slot: slot.id,
        num_pages: slot.pages() as u32,
        first_page: 0,
        __bindgen_anon_1: kvm_bindings::kvm_clear_dirty_log__bindgen_ty_1 {
            dirty_bitmap: bitmap.as_mut_ptr().cast(),
        },
    };
    // SAFETY: the bitmap has a bit for each of the slot's `num_pages`
    // pages and outlives the call; KVM only reads it.
    let rc = unsafe { ioctl_with_ref(&shell.vm.as_raw_fd(), KVM_CLEAR_DIRTY_LOG(), &clear) };
    if rc < 0 {
        return Err(Error::Kvm {
            op: "CLEAR_DIRTY_LOG",
            source: kvm_ioctls::Error::last(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(slots: &Slots) -> Vec<(u64, u64, bool)> {
        slots
            .slots
            .iter()
            .map(|s| (s.start >> 20, s.len >> 20, s.logged()))
            .collect()
    }

    #[test]
    fn holes_get_unlogged_slots_between_logged_ones() {
        let slots = Slots::around(128 << 20, &[(4 << 20, 100 << 20)], &[], &[]);
        assert_eq!(
            layout(&slots),
            vec![(0, 4, true), (4, 100, false), (104, 24, true)]
        );
        // Holes at either end leave no empty slot.
        let slots = Slots::around(64 << 20, &[(0, 16 << 20), (48 << 20, 16 << 20)], &[], &[]);
        assert_eq!(
            layout(&slots),
            vec![(0, 16, false), (16, 32, true), (48, 16, false)]
        );
        let ids: Vec<u32> = slots.slots.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        assert_eq!(
            layout(&Slots::single(16 << 20, false)),
            vec![(0, 16, false)]
        );
    }

    #[test]
    fn copied_and_read_only_blocks_get_unlogged_slots_that_resets_do_not_drop() {
        let slots = Slots::around(
            64 << 20,
            &[(16 << 20, 16 << 20)],
            &[(2 << 20, 2 << 20), (40 << 20, 4 << 20)],
            &[(6 << 20, 2 << 20)],
        );
        let kinds: Vec<(u64, u64, Kind)> = slots
            .slots
            .iter()
            .map(|s| (s.start >> 20, s.len >> 20, s.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0, 2, Kind::Logged),
                (2, 2, Kind::Copied),
                (4, 2, Kind::Logged),
                (6, 2, Kind::ReadOnly),
                (8, 8, Kind::Logged),
                (16, 16, Kind::Fresh),
                (32, 8, Kind::Logged),
                (40, 4, Kind::Copied),
                (44, 20, Kind::Logged),
            ]
        );
    }

    #[test]
    fn only_the_largest_holes_go_unlogged() {
        let holes: Vec<(u64, u64)> = (0..40u64)
            .map(|i| ((i * 40) << 20, (16 + i) << 20))
            .collect();
        let slots = Slots::around(1600 << 20, &holes, &[], &[]);
        let unlogged: Vec<u64> = slots
            .slots
            .iter()
            .filter(|s| !s.logged())
            .map(|s| s.len >> 20)
            .collect();
        assert_eq!(unlogged.len(), MAX_UNLOGGED);
        assert_eq!(unlogged[0], 16 + 40 - MAX_UNLOGGED as u64);
        // Still every byte of RAM in exactly one slot, in order.
        let mut at = 0;
        for slot in &slots.slots {
            assert_eq!(slot.start, at);
            at += slot.len;
        }
        assert_eq!(at, 1600 << 20);
    }
}
