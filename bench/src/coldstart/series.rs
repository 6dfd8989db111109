//! Samples and series: what every scenario and alternative produces, and
//! the sequential measuring loop (with its progress bar) most of them share.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use wisp::stats::Summary;

/// How an invocation started, as the daemon reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// Restored from the snapshot for this request.
    Cold,
    /// A pooled instance, reset in place.
    Warm,
    /// Not a daemon invocation (a process, a fresh boot).
    None,
}

impl Start {
    /// The CSV spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Cold => "cold",
            Start::Warm => "warm",
            Start::None => "",
        }
    }
}

/// One invocation.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// When it started, in microseconds since the series started.
    pub at_us: u64,
    /// Wall-clock latency as the caller saw it, in microseconds.
    pub latency_us: u64,
    /// It answered correctly.
    pub ok: bool,
    /// Cold or warm (daemon scenarios only).
    pub start: Start,
}

impl Sample {
    /// Its latency.
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us)
    }
}

/// The samples of one scenario or alternative on one function.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    /// What ran, e.g. `wisp cold` or `wasmtime run`.
    pub scenario: String,
    /// Which function: `hello` or `transform`.
    pub function: String,
    /// Every invocation, in order.
    pub samples: Vec<Sample>,
    /// Wall time of the whole series, in microseconds.
    pub wall_us: u64,
    /// Up to a few distinct error messages.
    pub errors: Vec<String>,
}

/// Distinct error messages kept per series.
const ERROR_EXAMPLES: usize = 5;

impl Series {
    /// An empty series.
    pub fn new(scenario: &str, function: &str) -> Series {
        Series {
            scenario: scenario.to_string(),
            function: function.to_string(),
            samples: Vec::new(),
            wall_us: 0,
            errors: Vec::new(),
        }
    }

    /// Appends `later`, a series measured after this one: its samples'
    /// times continue from this one's wall time.
    pub fn append(&mut self, later: Series) {
        let offset = self.wall_us;
        self.samples
            .extend(later.samples.into_iter().map(|s| Sample {
                at_us: s.at_us + offset,
                ..s
            }));
        self.wall_us += later.wall_us;
        for message in later.errors {
            self.note_error(message);
        }
    }

    /// Records an error message (the first few distinct ones are kept).
    pub fn note_error(&mut self, message: String) {
        if self.errors.len() < ERROR_EXAMPLES && !self.errors.contains(&message) {
            self.errors.push(message);
        }
    }

    /// Latency percentiles of the successful invocations.
    pub fn summary(&self) -> Option<Summary> {
        let ok: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| s.ok)
            .map(Sample::latency)
            .collect();
        Summary::of(&ok)
    }

    /// Invocations that failed.
    pub fn failures(&self) -> usize {
        self.samples.iter().filter(|s| !s.ok).count()
    }

    /// Successful invocations per second of wall time.
    pub fn throughput(&self) -> f64 {
        let ok = self.samples.iter().filter(|s| s.ok).count();
        if self.wall_us == 0 {
            0.0
        } else {
            ok as f64 / (self.wall_us as f64 / 1e6)
        }
    }

    /// How many invocations started `start`.
    pub fn count(&self, start: Start) -> usize {
        self.samples.iter().filter(|s| s.start == start).count()
    }
}

/// A progress bar for `len` steps labelled `label` (drawn on stderr, and
/// only when it is a terminal).
pub fn progress(label: &str, len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:<34} [{bar:30.cyan/blue}] {pos:>6}/{len:6} {per_sec:>12} eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}

/// Runs `invoke` `runs` times back to back, timing each call: `Ok(start)`
/// is a correct answer, `Err(message)` a failure.
pub fn measure(
    scenario: &str,
    function: &str,
    runs: usize,
    mut invoke: impl FnMut() -> Result<Start, String>,
) -> Series {
    let mut series = Series::new(scenario, function);
    let bar = progress(&format!("{scenario} / {function}"), runs as u64);
    let t0 = Instant::now();
    for _ in 0..runs {
        let start = Instant::now();
        let result = invoke();
        let latency = start.elapsed();
        let (ok, kind) = match result {
            Ok(kind) => (true, kind),
            Err(message) => {
                series.note_error(message);
                (false, Start::None)
            }
        };
        series.samples.push(Sample {
            at_us: (start - t0).as_micros() as u64,
            latency_us: latency.as_micros() as u64,
            ok,
            start: kind,
        });
        bar.inc(1);
    }
    series.wall_us = t0.elapsed().as_micros() as u64;
    bar.finish_and_clear();
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_records_every_call_and_its_outcome() {
        let mut n = 0;
        let series = measure("test", "f", 5, || {
            n += 1;
            match n {
                2 => Err("boom".to_string()),
                4 => Err("boom".to_string()),
                _ => Ok(if n == 1 { Start::Cold } else { Start::Warm }),
            }
        });
        assert_eq!(series.samples.len(), 5);
        assert_eq!(series.failures(), 2);
        assert_eq!(series.errors, vec!["boom".to_string()]);
        assert_eq!(series.count(Start::Cold), 1);
        assert_eq!(series.count(Start::Warm), 2);
        assert_eq!(series.summary().unwrap().count, 3);
        assert!(series.samples.windows(2).all(|w| w[0].at_us <= w[1].at_us));
        assert!(series.throughput() > 0.0);
    }

    #[test]
    fn appending_continues_the_timeline_and_keeps_the_errors() {
        let block = |at: &[u64], wall_us, error: &str| Series {
            samples: at
                .iter()
                .map(|&at_us| Sample {
                    at_us,
                    latency_us: 10,
                    ok: true,
                    start: Start::Warm,
                })
                .collect(),
            wall_us,
            errors: vec![error.to_string()],
            ..Series::new("s", "f")
        };
        let mut series = block(&[0, 40], 100, "first");
        series.append(block(&[0, 30], 50, "second"));
        series.append(block(&[5], 20, "first"));
        let at: Vec<u64> = series.samples.iter().map(|s| s.at_us).collect();
        assert_eq!(at, [0, 40, 100, 130, 155]);
        assert_eq!(series.wall_us, 170);
        assert_eq!(series.errors, ["first", "second"]);
    }
}
