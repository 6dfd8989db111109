//! Working sets: the pages an invocation touches after the snapshot point,
//! which a restore can pre-fault in one pass (the REAP idea) instead of
//! taking the faults one by one inside the guest.
//!
//! A snapshot may record one from a sample invocation (`wisp snapshot
//! create`); a VM restored from an image without one can teach it the
//! pages its first invocation wrote ([`Vm::learn_working_set`]). Only
//! written pages are worth it on the hosts measured (docs/SNAPSHOT.md): a
//! write to a snapshot page in the guest is a copy-on-write fault that, if
//! a neighbour's read already mapped the page, the kernel announces to the
//! MMU notifier of every VM in the process; copied ahead, in one
//! `MADV_POPULATE_WRITE`, it announces nothing (nothing was mapped) and
//! costs the guest only KVM's own fault.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wisp_abi::layout::PAGE_SIZE;

use super::{Image, Invocation, Prefault, Vm, VmConfig};
use crate::error::{Error, Result};
use crate::io::BufferIo;
use crate::memory::{self, Blocks};

/// The longest a working-set sample invocation may run.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most pages a learned working set holds (64 MiB): pre-copying costs
/// each restore a few µs a page, so a function that writes far more than
/// that in its snapshot's data is better left to fault what it uses.
const MAX_LEARNED_PAGES: u64 = 16 << 10;

/// Pages an invocation touched after the snapshot point, as runs of
/// `(first page, page count)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingSet {
    /// Pages only read.
    pub read: Vec<(u64, u64)>,
    /// Pages written.
    pub written: Vec<(u64, u64)>,
}

impl WorkingSet {
    /// Total pages (read, written).
    pub fn page_counts(&self) -> (u64, u64) {
        let sum = |runs: &[(u64, u64)]| runs.iter().map(|r| r.1).sum();
        (sum(&self.read), sum(&self.written))
    }

    /// Whether it names no page.
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.written.is_empty()
    }

    /// Checks that every page lies in `mem_size` bytes of guest memory.
    pub(super) fn check(&self, mem_size: u64) -> Result<()> {
        let pages = mem_size / PAGE_SIZE;
        let bad = self
            .read
            .iter()
            .chain(&self.written)
            .any(|&(start, count)| start.checked_add(count).is_none_or(|end| end > pages));
        if bad {
            return Err(Error::Snapshot(wisp_snapshot::Error::Corrupt(
                "working set outside guest memory".into(),
            )));
        }
        Ok(())
    }

    /// What a restore should pre-copy, learned from the runs of pages a
    /// VM's invocation `written`: those in blocks that hold snapshot data
    /// (the others are fresh anonymous memory, which the guest faults in
    /// 2 MiB at a time), at most [`MAX_LEARNED_PAGES`] of them, lowest
    /// first.
    pub(super) fn learned(written: &[(u64, u64)], blocks: &Blocks) -> WorkingSet {
        let (in_data, _) = blocks.split(written);
        let mut kept = Vec::new();
        let mut room = MAX_LEARNED_PAGES;
        for (start, pages) in memory::merge_runs(in_data) {
            if room == 0 {
                break;
            }
            let take = pages.min(room);
            kept.push((start, take));
            room -= take;
        }
        WorkingSet {
            read: Vec::new(),
            written: kept,
        }
    }
}

impl Vm {
    /// Teaches this VM's snapshot image the pages its invocations wrote
    /// in the snapshot's data (see [`WorkingSet::learned`]), unless the
    /// image has a working set already (recorded in the snapshot, or
    /// learned from another VM): restores with [`Prefault::WorkingSet`]
    /// then copy them ahead. Call it after an invocation and before a
    /// reset. Returns whether the image learned from this VM; false for a
    /// VM that was not restored or whose page tables can't be read.
    pub fn learn_working_set(&self) -> bool {
        let Some(image) = &self.image else {
            return false;
        };
        if image.has_working_set() {
            return false;
        }
        let Ok(touched) = memory::touched_pages(&self.mem) else {
            return false;
        };
        image.learn(WorkingSet::learned(&touched.written, image.blocks()))
    }
}

/// Restores a VM from a just-written snapshot without pre-faulting, runs
/// `invocation` in it, and returns the pages it touched.
pub(super) fn record(
    image: Image,
    config: &VmConfig,
    invocation: &Invocation,
) -> Result<WorkingSet> {
    let config = VmConfig {
        prefault: Prefault::None,
        timeout: Some(
            config
                .timeout
                .map_or(SAMPLE_TIMEOUT, |t| t.min(SAMPLE_TIMEOUT)),
        ),
        ..config.clone()
    };
    let mut vm = Vm::restore(&Arc::new(image), config)?;
    // Whatever the sample's outcome, the pages it touched are the ones a
    // real invocation will start with.
    let _ = vm.invoke(invocation, &mut BufferIo::new());
    let touched = memory::touched_pages(&vm.mem)?;
    Ok(WorkingSet {
        read: touched.read,
        written: touched.written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_abi::layout::LARGE_PAGE_SIZE;

    const BLOCK: u64 = LARGE_PAGE_SIZE / PAGE_SIZE;

    #[test]
    fn learns_only_writes_in_blocks_with_data() {
        // Data in blocks 0 and 2 of 4.
        let blocks = Blocks::of(&[(1, 3), (2 * BLOCK + 5, 1)], 4 * LARGE_PAGE_SIZE);
        let written = [
            (2, 2),
            (BLOCK + 7, 3),      // block 1: no data
            (2 * BLOCK + 10, 4), // block 2
            (3 * BLOCK - 1, 2),  // straddles blocks 2 and 3
        ];
        let ws = WorkingSet::learned(&written, &blocks);
        assert!(ws.read.is_empty());
        assert_eq!(
            ws.written,
            vec![(2, 2), (2 * BLOCK + 10, 4), (3 * BLOCK - 1, 1)]
        );
        assert_eq!(ws.page_counts(), (0, 7));
    }

    #[test]
    fn a_learned_set_is_bounded() {
        let mem = 256 * LARGE_PAGE_SIZE;
        let blocks = Blocks::all_data(mem);
        let ws = WorkingSet::learned(&[(0, 100), (1000, mem / PAGE_SIZE - 1000)], &blocks);
        assert_eq!(ws.page_counts().1, MAX_LEARNED_PAGES);
        assert_eq!(ws.written[0], (0, 100));
        assert_eq!(ws.written[1], (1000, MAX_LEARNED_PAGES - 100));
    }

    #[test]
    fn sets_outside_memory_are_refused() {
        let ws = WorkingSet {
            read: vec![],
            written: vec![(10, 10)],
        };
        ws.check(20 * PAGE_SIZE).unwrap();
        assert!(ws.check(19 * PAGE_SIZE).is_err());
        let overflow = WorkingSet {
            read: vec![(u64::MAX, 2)],
            written: vec![],
        };
        assert!(overflow.check(1 << 30).is_err());
    }
}
