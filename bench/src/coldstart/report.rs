//! The results of a `wisp-bench` run: the table people read, the targets,
//! and every sample as CSV and JSON for whoever wants to look further.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::daemon::{Burst, Density};
use super::machine::Machine;
use super::series::Series;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The host.
    pub machine: Machine,
    /// Sequential scenarios and alternatives, per function.
    pub series: Vec<Series>,
    /// The burst scenario, if it ran.
    pub burst: Option<Burst>,
    /// The density scenario, if it ran.
    pub density: Option<Density>,
    /// The density scenario of the Python handler, if it ran.
    pub python_density: Option<Density>,
    /// Scenarios and alternatives that could not run, with the reason.
    pub skipped: Skipped,
}

/// What could not run, and why.
pub type Skipped = Vec<(String, String)>;

/// The scenario every ratio is taken against.
pub const COLD: &str = "wisp cold";
/// The warm scenario.
pub const WARM: &str = "wisp warm";
/// The warm scenario through an alias splitting 90/10 between two
/// versions (each with its own pool).
pub const WARM_SPLIT: &str = "wisp warm split";
/// The warm scenario without an alias, measured in blocks alternating with
/// [`WARM_SPLIT`]'s: what the split's cost is taken against, so that a
/// drift of the machine lands on both alike.
pub const WARM_UNALIASED: &str = "wisp warm unaliased";
/// The cold scenario on the `--baseline` build.
pub const BASELINE_COLD: &str = "baseline cold";
/// The warm scenario on the `--baseline` build.
pub const BASELINE_WARM: &str = "baseline warm";
/// The native process alternative.
pub const NATIVE: &str = "native fork/exec";
/// A dynamically linked `/bin/echo` per invocation (hello only).
pub const ECHO: &str = "fork/exec /bin/echo";
/// The `wasmtime run` alternative.
pub const WASMTIME: &str = "wasmtime run";
/// The Python handler as a `python3` process per invocation.
pub const PYTHON_PROCESS: &str = "python3 process";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Report {
    /// The series `scenario` ran on `function`.
    pub fn find(&self, scenario: &str, function: &str) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.scenario == scenario && s.function == function)
    }

    fn p50(&self, scenario: &str, function: &str) -> Option<Duration> {
        Some(self.find(scenario, function)?.summary()?.p50)
    }

    /// The results table, the burst and density lines and the targets.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "machine: {}", self.machine.describe());
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<22} {:<10} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>8} {:>6}",
            "scenario",
            "function",
            "n",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "per sec",
            "x cold",
            "x warm",
            "errors"
        );
        for s in &self.series {
            let Some(sum) = s.summary() else {
                let _ = writeln!(
                    out,
                    "{:<22} {:<10} all {} failed: {:?}",
                    s.scenario,
                    s.function,
                    s.samples.len(),
                    s.errors
                );
                continue;
            };
            let ratio = |base: &str| {
                self.p50(base, &s.function).map_or_else(
                    || "-".to_string(),
                    |b| format!("{:.1}x", sum.p50.as_secs_f64() / b.as_secs_f64()),
                )
            };
            let _ = writeln!(
                out,
                "{:<22} {:<10} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.0} {:>8} {:>8} {:>6}",
                s.scenario,
                s.function,
                sum.count,
                ms(sum.p50),
                ms(sum.p90),
                ms(sum.p99),
                ms(sum.max),
                s.throughput(),
                ratio(COLD),
                ratio(WARM),
                s.failures()
            );
        }
        for (base, new) in [(BASELINE_COLD, COLD), (BASELINE_WARM, WARM)] {
            for s in self.series.iter().filter(|s| s.scenario == base) {
                if let Some((b, n)) = self.p50(base, &s.function).zip(self.p50(new, &s.function)) {
                    let change = (n.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0;
                    let _ = writeln!(
                        out,
                        "baseline: {new} {} p50 {:.3} ms against {:.3} ms ({change:+.1}%)",
                        s.function,
                        ms(n),
                        ms(b)
                    );
                }
            }
        }
        for s in &self.series {
            let cold = s.count(super::series::Start::Cold);
            if [WARM, WARM_SPLIT, WARM_UNALIASED].contains(&s.scenario.as_str()) && cold > 0 {
                let _ = writeln!(out, "note: {cold} of the {} `{}` invocations of {} found no instance ready and started cold", s.samples.len(), s.scenario, s.function);
            }
        }
        if let Some(b) = &self.burst {
            let s = &b.series;
            let peak =
                |pick: fn(&(u64, u64, u64, u64)) -> u64| b.pool.iter().map(pick).max().unwrap_or(0);
            let _ = writeln!(
                out,
                "\nburst: {} clients released at once for {:.1} s: {} requests, {} errors, {:.0}/s; {} cold / {} warm; latency {}; at most {} instances ready and {} requests admitted at once",
                b.clients,
                s.wall_us as f64 / 1e6,
                s.samples.len(),
                s.failures(),
                s.throughput(),
                s.count(super::series::Start::Cold),
                s.count(super::series::Start::Warm),
                s.summary().map_or_else(|| "-".to_string(), |m| format!("p50 {:.2} ms p99 {:.2} ms max {:.2} ms", ms(m.p50), ms(m.p99), ms(m.max))),
                peak(|p| p.1),
                peak(|p| p.2)
            );
        }
        for (what, d) in [("", &self.density), (" of Python", &self.python_density)] {
            let Some(d) = d else { continue };
            let _ = writeln!(
                out,
                "\ndensity{what}: {} of {} instances ready ({} MiB guests) after a {} ms deploy; idle, each takes {} KiB of host memory ({} KiB of it in the daemon's RSS); {}/20 invocations answered",
                d.ready, d.requested, d.guest_mib, d.deploy_ms, d.host_kib_per_instance, d.rss_kib_per_instance, d.invocations_ok
            );
        }
        for (what, why) in &self.skipped {
            let _ = writeln!(out, "skipped {what}: {why}");
        }
        let _ = writeln!(out, "\ntargets:");
        for (ok, line) in self.targets() {
            let mark = match ok {
                Some(true) => "met   ",
                Some(false) => "MISSED",
                None => "n/a   ",
            };
            let _ = writeln!(out, "  {mark} {line}");
        }
        out
    }

    /// Each target of the cold-start work, met or not (`None`: not measured).
    pub fn targets(&self) -> Vec<(Option<bool>, String)> {
        let f = "hello";
        let cold = self.p50(COLD, f);
        let warm = self.p50(WARM, f);
        let split = self.p50(WARM_SPLIT, f);
        let unaliased = self.p50(WARM_UNALIASED, f);
        let native = self.p50(NATIVE, f);
        let echo = self.p50(ECHO, f);
        let wasmtime = self.p50(WASMTIME, f);
        let speedup =
            |a: Option<Duration>, b: Option<Duration>| Some(a?.as_secs_f64() / b?.as_secs_f64());
        let fmt =
            |d: Option<Duration>| d.map_or_else(|| "-".to_string(), |d| format!("{:.3} ms", ms(d)));
        let mut targets = vec![
            (
                cold.map(|c| c <= Duration::from_millis(1)),
                format!("cold p50 <= 1 ms: {}", fmt(cold)),
            ),
            (
                speedup(wasmtime, cold).map(|x| x >= 7.0),
                format!(
                    "cold >= 7x faster than `wasmtime run`: {}",
                    speedup(wasmtime, cold).map_or("-".into(), |x| format!("{x:.1}x"))
                ),
            ),
            (
                cold.zip(native).map(|(c, n)| c <= n),
                format!(
                    "cold no slower than a native process spawn (static binary): {} vs {}",
                    fmt(cold),
                    fmt(native)
                ),
            ),
            (
                cold.zip(echo).map(|(c, n)| c <= n),
                format!(
                    "cold no slower than fork/exec of /bin/echo: {} vs {}",
                    fmt(cold),
                    fmt(echo)
                ),
            ),
            (
                warm.map(|w| w <= Duration::from_micros(100)),
                format!("warm p50 <= 100 us: {}", fmt(warm)),
            ),
            (
                unaliased
                    .zip(split)
                    .map(|(w, s)| s <= w + Duration::from_micros(5)),
                format!(
                    "warm through a 90/10 alias split adds <= 5 us to warm p50: {} vs {} unaliased, alternating",
                    fmt(split),
                    fmt(unaliased)
                ),
            ),
            (
                speedup(native, warm).map(|x| x >= 9.0),
                format!(
                    "warm >= 9x faster than a process spawn (static binary): {}",
                    speedup(native, warm).map_or("-".into(), |x| format!("{x:.1}x"))
                ),
            ),
            (
                speedup(echo, warm).map(|x| x >= 9.0),
                format!(
                    "warm >= 9x faster than fork/exec of /bin/echo: {}",
                    speedup(echo, warm).map_or("-".into(), |x| format!("{x:.1}x"))
                ),
            ),
        ];
        let cli = self.p50(super::cli::CACHED, f);
        targets.push((
            cli.map(|c| c <= Duration::from_millis(2)),
            format!("cached `wisp run` p50 <= 2 ms: {}", fmt(cli)),
        ));
        targets.push((
            speedup(wasmtime, cli).map(|x| x >= 1.5),
            format!(
                "cached `wisp run` >= 1.5x faster than `wasmtime run`: {}",
                speedup(wasmtime, cli).map_or("-".into(), |x| format!("{x:.1}x"))
            ),
        ));
        targets.extend(self.handler_targets());
        targets.push(match &self.burst {
            Some(b) => (
                Some(b.clients >= 1000 && b.series.failures() == 0),
                format!(
                    "burst to {} concurrent with no errors: {} errors",
                    b.clients,
                    b.series.failures()
                ),
            ),
            None => (None, "burst to 1000 concurrent with no errors".to_string()),
        });
        targets.push(match &self.density {
            Some(d) => (
                Some(d.ready >= 1000 && d.host_kib_per_instance <= 2048),
                format!(
                    "density >= 1000 ready at <= 2 MiB each: {} at {} KiB",
                    d.ready, d.host_kib_per_instance
                ),
            ),
            None => (None, "density >= 1000 ready at <= 2 MiB each".to_string()),
        });
        targets.push(match &self.python_density {
            Some(d) => (
                Some(d.ready >= 500),
                format!(
                    "density of Python >= 500 ready: {} at {} KiB each",
                    d.ready, d.host_kib_per_instance
                ),
            ),
            None => (None, "density of Python >= 500 ready".to_string()),
        });
        targets
    }

    /// The targets of Python and JavaScript handlers (issue 15).
    fn handler_targets(&self) -> Vec<(Option<bool>, String)> {
        let fmt =
            |d: Option<Duration>| d.map_or_else(|| "-".to_string(), |d| format!("{:.3} ms", ms(d)));
        let python = self.find(COLD, "python").and_then(|s| s.summary());
        let (cold, cold_p99) = (python.as_ref().map(|s| s.p50), python.map(|s| s.p99));
        let warm = self.p50(WARM, "python");
        let process = self.p50(PYTHON_PROCESS, "python");
        let js_cold = self.p50(COLD, "javascript");
        vec![
            (
                cold.zip(cold_p99).map(|(p50, p99)| {
                    p50 <= Duration::from_millis(5) && p99 <= Duration::from_millis(15)
                }),
                format!(
                    "Python handler cold p50 <= 5 ms, p99 <= 15 ms: {}, {}",
                    fmt(cold),
                    fmt(cold_p99)
                ),
            ),
            (
                warm.map(|w| w <= Duration::from_micros(500)),
                format!("Python handler warm p50 <= 0.5 ms: {}", fmt(warm)),
            ),
            (
                js_cold.map(|c| c <= Duration::from_millis(2)),
                format!("JavaScript handler cold p50 <= 2 ms: {}", fmt(js_cold)),
            ),
            (
                cold.zip(process).map(|(c, p)| c < p),
                format!(
                    "Python handler cold faster than a `python3` process: {} vs {}",
                    fmt(cold),
                    fmt(process)
                ),
            ),
        ]
    }

    /// Writes `results.json`, `samples.csv` and `summary.txt` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        write_file(&dir.join("results.json"), &json)?;
        write_file(&dir.join("samples.csv"), self.csv().as_bytes())?;
        write_file(&dir.join("summary.txt"), self.render().as_bytes())
    }

    /// Every sample, one line each.
    pub fn csv(&self) -> String {
        let mut out = String::from("scenario,function,seq,at_us,latency_us,ok,start\n");
        let burst = self.burst.iter().map(|b| &b.series);
        for s in self.series.iter().chain(burst) {
            for (i, x) in s.samples.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{},{},{i},{},{},{},{}",
                    s.scenario,
                    s.function,
                    x.at_us,
                    x.latency_us,
                    x.ok,
                    x.start.as_str()
                );
            }
        }
        out
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}
