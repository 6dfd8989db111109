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
//!
//! KVM's own fault is what is left, one per 4 KiB page the guest touches
//! (~3 µs on a shadow-paging host), because the file's pages can only be
//! mapped 4 KiB at a time. A block of 2 MiB the invocation touched much of
//! (a hot block: typically the agent's code and heap, where a function's
//! input is parsed) is therefore copied whole into a huge page of fresh
//! memory at restore, which KVM maps with one fault. Copying a block costs
//! 0.3-0.55 ms, mostly the kernel zeroing the huge page, so only a block
//! the guest faulted in more than ~130 times pays (see [`HOT_BLOCK_FAULTS`]).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wisp_abi::layout::PAGE_SIZE;

use super::{Image, Invocation, Prefault, Vm, VmConfig};
use crate::error::{Error, Result};
use crate::io::BufferIo;
use crate::memory::{self, Blocks, TouchedPages, BLOCK_PAGES};

/// The longest a working-set sample invocation may run.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most pages a learned working set holds (64 MiB): pre-copying costs
/// each restore a few µs a page, so a function that writes far more than
/// that in its snapshot's data is better left to fault what it uses.
const MAX_LEARNED_PAGES: u64 = 16 << 10;

/// Estimated guest faults in a 2 MiB block of snapshot data (see
/// [`guest_faults`]) above which restores copy the block whole (a hot
/// block). Copying costs ~0.35 ms to zero the huge page and up to ~0.2 ms
/// to copy the data in, against ~4 µs per fault saved (measured through
/// the daemon on a shadow-paging host).
pub const HOT_BLOCK_FAULTS: u64 = 128;

/// Pages the guest is taken to have read in each 64 KiB window of a block
/// the host shows mapped from the file: the kernel maps the whole window
/// around a read fault (fault-around), so the host's page tables show 16
/// pages where the guest read between 3 and 9 (agent and interpreter
/// code, counted with `kvmmmu:kvm_mmu_set_spte`).
const READS_PER_WINDOW: u64 = 3;

/// Pages in a fault-around window.
const WINDOW_PAGES: u64 = 16;

/// Most hot blocks a working set names (16 MiB): the busiest.
pub const MAX_HOT_BLOCKS: usize = 8;

/// Pages an invocation touched after the snapshot point, as runs of
/// `(first page, page count)`, and the 2 MiB blocks it touched so much of
/// that restores copy them whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingSet {
    /// Pages only read (outside the hot blocks).
    pub read: Vec<(u64, u64)>,
    /// Pages written (outside the hot blocks).
    pub written: Vec<(u64, u64)>,
    /// Hot blocks (indices of 2 MiB blocks holding snapshot data), sorted.
    /// A snapshot keeps them in a section of their own, so that snapshots
    /// written before they existed still read.
    #[serde(skip)]
    pub hot: Vec<u64>,
}

impl WorkingSet {
    /// The working set of an invocation that `touched` these pages of a
    /// snapshot whose data lies in `blocks`: the busiest blocks with data
    /// become hot, and `read` and `written` keep the runs outside them
    /// (read ones only `with_read`).
    fn of(touched: &TouchedPages, blocks: &Blocks, with_read: bool) -> WorkingSet {
        let mut hot: Vec<(u64, u64)> = guest_faults(touched, blocks.count())
            .into_iter()
            .enumerate()
            .map(|(block, n)| (block as u64, n))
            .filter(|&(block, n)| n >= HOT_BLOCK_FAULTS && blocks.has_data(block))
            .collect();
        hot.sort_by_key(|&(block, n)| (std::cmp::Reverse(n), block));
        hot.truncate(MAX_HOT_BLOCKS);
        let mut hot: Vec<u64> = hot.into_iter().map(|(block, _)| block).collect();
        hot.sort_unstable();
        let hot_pages: Vec<(u64, u64)> = hot
            .iter()
            .map(|&b| (b * BLOCK_PAGES, BLOCK_PAGES))
            .collect();
        let outside_hot = |runs: &[(u64, u64)]| memory::subtract_runs(runs, &hot_pages);
        WorkingSet {
            read: if with_read {
                outside_hot(&touched.read)
            } else {
                Vec::new()
            },
            written: outside_hot(&touched.written),
            hot,
        }
    }

    /// Total pages (read, written), hot blocks not counted.
    pub fn page_counts(&self) -> (u64, u64) {
        let sum = |runs: &[(u64, u64)]| runs.iter().map(|r| r.1).sum();
        (sum(&self.read), sum(&self.written))
    }

    /// Pages a restore copies or maps ahead: the hot blocks whole, and the
    /// runs.
    pub fn pages_ahead(&self) -> u64 {
        let (read, written) = self.page_counts();
        read + written + self.hot.len() as u64 * BLOCK_PAGES
    }

    /// The hot blocks as merged runs of guest bytes `(start, length)`.
    pub fn hot_ranges(&self) -> Vec<(u64, u64)> {
        let runs = self
            .hot
            .iter()
            .map(|&b| (b * BLOCK_PAGES, BLOCK_PAGES))
            .collect();
        memory::merge_runs(runs)
            .into_iter()
            .map(|(page, pages)| (page * PAGE_SIZE, pages * PAGE_SIZE))
            .collect()
    }

    /// Whether it names no page.
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.written.is_empty() && self.hot.is_empty()
    }

    /// Checks that every page and block lies in `mem_size` bytes of guest
    /// memory, and that there are not too many hot blocks.
    pub(super) fn check(&self, mem_size: u64) -> Result<()> {
        let pages = mem_size / PAGE_SIZE;
        let bad = self
            .read
            .iter()
            .chain(&self.written)
            .any(|&(start, count)| start.checked_add(count).is_none_or(|end| end > pages))
            || self.hot.len() > MAX_HOT_BLOCKS
            || self.hot.iter().any(|&b| b >= pages / BLOCK_PAGES);
        if bad {
            return Err(Error::Snapshot(wisp_snapshot::Error::Corrupt(
                "working set outside guest memory".into(),
            )));
        }
        Ok(())
    }

    /// What a restore should copy ahead, learned from the pages a VM's
    /// invocation `touched`: its hot blocks, and the pages it wrote outside
    /// them in blocks that hold snapshot data (the others are fresh
    /// anonymous memory, which the guest faults in 2 MiB at a time), at
    /// most [`MAX_LEARNED_PAGES`] of them, lowest first.
    pub(super) fn learned(touched: &TouchedPages, blocks: &Blocks) -> WorkingSet {
        let mut set = WorkingSet::of(touched, blocks, false);
        let (in_data, _) = blocks.split(&set.written);
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
        set.written = kept;
        set
    }
}

/// Per block of `count`, about how many faults the guest took there: the
/// pages written (each a private copy, so exact) and, for pages only read,
/// [`READS_PER_WINDOW`] per fault-around window holding any.
fn guest_faults(touched: &TouchedPages, count: u64) -> Vec<u64> {
    let mut faults = vec![0u64; count as usize];
    let mut add = |page: u64, n: u64| {
        if let Some(f) = faults.get_mut((page / BLOCK_PAGES) as usize) {
            *f += n;
        }
    };
    for &(start, pages) in &touched.written {
        for page in start..start + pages {
            add(page, 1);
        }
    }
    let mut last_window = None;
    for &(start, pages) in &touched.read {
        for window in start / WINDOW_PAGES..(start + pages).div_ceil(WINDOW_PAGES) {
            if last_window != Some(window) {
                add(window * WINDOW_PAGES, READS_PER_WINDOW);
                last_window = Some(window);
            }
        }
    }
    faults
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
        image.learn(WorkingSet::learned(&touched, image.blocks()))
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
    let image = Arc::new(image);
    let mut vm = Vm::restore(&image, config)?;
    // Whatever the sample's outcome, the pages it touched are the ones a
    // real invocation will start with.
    let _ = vm.invoke(invocation, &mut BufferIo::new());
    let touched = memory::touched_pages(&vm.mem)?;
    Ok(WorkingSet::of(&touched, image.blocks(), true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_abi::layout::LARGE_PAGE_SIZE;

    const BLOCK: u64 = LARGE_PAGE_SIZE / PAGE_SIZE;

    fn written(runs: &[(u64, u64)]) -> TouchedPages {
        TouchedPages {
            read: Vec::new(),
            written: runs.to_vec(),
        }
    }

    #[test]
    fn learns_only_writes_in_blocks_with_data() {
        // Data in blocks 0 and 2 of 4.
        let blocks = Blocks::of(&[(1, 3), (2 * BLOCK + 5, 1)], 4 * LARGE_PAGE_SIZE);
        let runs = [
            (2, 2),
            (BLOCK + 7, 3),      // block 1: no data
            (2 * BLOCK + 10, 4), // block 2
            (3 * BLOCK - 1, 2),  // straddles blocks 2 and 3
        ];
        let ws = WorkingSet::learned(&written(&runs), &blocks);
        assert!(ws.read.is_empty());
        assert!(ws.hot.is_empty());
        assert_eq!(
            ws.written,
            vec![(2, 2), (2 * BLOCK + 10, 4), (3 * BLOCK - 1, 1)]
        );
        assert_eq!(ws.page_counts(), (0, 7));
        assert_eq!(ws.pages_ahead(), 7);
    }

    #[test]
    fn reads_count_per_fault_around_window() {
        let touched = TouchedPages {
            // Windows 0 and 1 (one run ends and the next starts in
            // window 0), then 2 to 4.
            read: vec![(10, 3), (14, 4), (32, 40)],
            written: vec![(BLOCK + 3, 5)],
        };
        assert_eq!(guest_faults(&touched, 2), vec![5 * READS_PER_WINDOW, 5]);
    }

    #[test]
    fn blocks_with_data_the_guest_faulted_much_in_are_copied_whole() {
        // Data in blocks 0 to 2 of 4.
        let blocks = Blocks::of(&[(0, 3 * BLOCK)], 4 * LARGE_PAGE_SIZE);
        let one_per_window = |block: u64, windows: u64| {
            (0..windows).map(move |w| (block * BLOCK + w * WINDOW_PAGES, 1))
        };
        let touched = TouchedPages {
            // Block 1: just hot. Block 2: one short.
            read: one_per_window(1, 10).chain(one_per_window(2, 9)).collect(),
            // Block 3 holds no data: however much is written there, the
            // guest faults it in 2 MiB at a time already.
            written: vec![
                (5, 1),
                (BLOCK + 200, HOT_BLOCK_FAULTS - 10 * READS_PER_WINDOW),
                (2 * BLOCK + 200, HOT_BLOCK_FAULTS - 9 * READS_PER_WINDOW - 1),
                (3 * BLOCK, 300),
            ],
        };
        let ws = WorkingSet::learned(&touched, &blocks);
        assert_eq!(ws.hot, vec![1]);
        // Pages in the hot block are not copied again.
        let block_2_written = HOT_BLOCK_FAULTS - 9 * READS_PER_WINDOW - 1;
        assert_eq!(ws.written, vec![(5, 1), (2 * BLOCK + 200, block_2_written)]);
        assert_eq!(ws.pages_ahead(), 1 + block_2_written + BLOCK);
        assert_eq!(ws.hot_ranges(), vec![(LARGE_PAGE_SIZE, LARGE_PAGE_SIZE)]);
        // A recorded set keeps its reads, outside the hot blocks too.
        let recorded = WorkingSet::of(&touched, &blocks, true);
        assert_eq!(recorded.hot, vec![1]);
        assert_eq!(recorded.read, one_per_window(2, 9).collect::<Vec<_>>());
    }

    #[test]
    fn only_the_busiest_blocks_are_hot() {
        let mem = 16 * LARGE_PAGE_SIZE;
        let blocks = Blocks::all_data(mem);
        // Block b has HOT_BLOCK_FAULTS + b pages written, for b in 0..12.
        let runs: Vec<(u64, u64)> = (0..12).map(|b| (b * BLOCK, HOT_BLOCK_FAULTS + b)).collect();
        let ws = WorkingSet::learned(&written(&runs), &blocks);
        assert_eq!(ws.hot, (12 - MAX_HOT_BLOCKS as u64..12).collect::<Vec<_>>());
        assert_eq!(ws.written, runs[..12 - MAX_HOT_BLOCKS].to_vec());
        // Adjacent blocks make one range.
        assert_eq!(
            ws.hot_ranges(),
            vec![(4 * LARGE_PAGE_SIZE, MAX_HOT_BLOCKS as u64 * LARGE_PAGE_SIZE)]
        );
        ws.check(mem).unwrap();
    }

    #[test]
    fn a_learned_set_is_bounded() {
        let mem = 512 * LARGE_PAGE_SIZE;
        let blocks = Blocks::all_data(mem);
        // Just too few pages in each block to make it hot.
        let runs: Vec<(u64, u64)> = (0..400)
            .map(|b| (b * BLOCK, HOT_BLOCK_FAULTS - 1))
            .collect();
        let ws = WorkingSet::learned(&written(&runs), &blocks);
        assert!(ws.hot.is_empty());
        assert_eq!(ws.page_counts().1, MAX_LEARNED_PAGES);
        assert_eq!(ws.written[0], runs[0]);
        let last = ws.written.last().unwrap();
        assert_eq!(last.0 % BLOCK, 0);
        assert_eq!(last.1, MAX_LEARNED_PAGES % (HOT_BLOCK_FAULTS - 1));
    }

    #[test]
    fn sets_outside_memory_are_refused() {
        let ws = WorkingSet {
            written: vec![(10, 10)],
            ..WorkingSet::default()
        };
        ws.check(20 * PAGE_SIZE).unwrap();
        assert!(ws.check(19 * PAGE_SIZE).is_err());
        let overflow = WorkingSet {
            read: vec![(u64::MAX, 2)],
            ..WorkingSet::default()
        };
        assert!(overflow.check(1 << 30).is_err());
        let hot = |hot: Vec<u64>| WorkingSet {
            hot,
            ..WorkingSet::default()
        };
        hot(vec![0, 3]).check(4 * LARGE_PAGE_SIZE).unwrap();
        assert!(hot(vec![4]).check(4 * LARGE_PAGE_SIZE).is_err());
        let too_many = (0..MAX_HOT_BLOCKS as u64 + 1).collect();
        assert!(hot(too_many).check(64 * LARGE_PAGE_SIZE).is_err());
    }
}
