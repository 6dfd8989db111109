//! `wisp run`, a process per invocation, as a user runs it: the first run
//! of a module (compiled, booted, its snapshot cached, restored from it)
//! and every run after it (restored from `wisp run`'s snapshot cache).

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::process::ProcessRun;
use super::series::{measure, Series, Start};

/// The row of first runs.
pub const FIRST: &str = "wisp run (first)";
/// The row of runs restored from the cache.
pub const CACHED: &str = "wisp run (cached)";

/// Runs `run` (a `wisp run` of the module) `runs` times as a first run:
/// each with an empty cache directory of its own under `scratch`, removed
/// by another thread, off the measured path.
pub fn first_runs(run: &ProcessRun, function: &str, scratch: &Path, runs: usize) -> Series {
    let (done, removed) = mpsc::channel::<PathBuf>();
    let reaper = std::thread::spawn(move || {
        for dir in removed {
            let _ = std::fs::remove_dir_all(dir);
        }
    });
    let mut n = 0;
    let series = measure(FIRST, function, runs, || {
        n += 1;
        let cache = scratch.join(format!("first-run-cache-{n}"));
        let mut first = run.clone();
        first.scenario = FIRST.to_string();
        first.env.retain(|(name, _)| name != "WISP_CACHE_DIR");
        first.env.push((
            "WISP_CACHE_DIR".to_string(),
            cache.to_string_lossy().into_owned(),
        ));
        let result = first.once(n);
        let _ = done.send(cache);
        result.map(|()| Start::None)
    });
    drop(done);
    let _ = reaper.join();
    series
}
