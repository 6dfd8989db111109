//! Helpers shared by the benchmarks in `benches/`: argument parsing, timing
//! loops and result rows.

use std::time::{Duration, Instant};

use wisp::stats::Summary;

/// `--runs N` from the benchmark's command line, else `default`.
pub fn runs_arg(default: usize) -> usize {
    count_arg("--runs", default)
}

/// A positive count given as `FLAG N` on the benchmark's command line
/// (cargo passes other flags such as `--bench`, which are ignored), else
/// `default`; exits with a usage error if the value is not a positive
/// number.
pub fn count_arg(flag: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == flag) {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(n) if n > 0 => n,
            _ => {
                eprintln!("{flag} needs a positive number");
                std::process::exit(2);
            }
        },
        None => default,
    }
}

/// Whether `/dev/kvm` opens for reading and writing, as booting a VM needs.
pub fn kvm_usable() -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
}

/// Exits with a loud message unless `/dev/kvm` can be opened: every
/// benchmark here boots real micro-VMs.
pub fn require_kvm() {
    if let Err(e) = kvm_usable() {
        eprintln!("*** /dev/kvm is not usable ({e}): this benchmark boots real micro-VMs. ***");
        std::process::exit(1);
    }
}

/// Times `runs` calls of `f`.
pub fn time(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

/// Prints one result row and returns its summary.
pub fn row(name: &str, samples: &[Duration]) -> Summary {
    let summary = Summary::of(samples).expect("at least one run");
    println!("{name:<44} {}", columns(&summary));
    summary
}

/// A row's columns: p50, p99, min and max in milliseconds, and the count.
fn columns(s: &Summary) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "p50 {:>9.3} ms  p99 {:>9.3} ms  min {:>9.3} ms  max {:>9.3} ms  (n={})",
        ms(s.p50),
        ms(s.p99),
        ms(s.min),
        ms(s.max),
        s.count
    )
}

/// The ratio of two medians.
pub fn ratio(a: &Summary, b: &Summary) -> f64 {
    a.p50.as_secs_f64() / b.p50.as_secs_f64()
}
