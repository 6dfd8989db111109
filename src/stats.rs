//! Latency percentiles over a set of samples: the daemon's recent p50/p99
//! per function (`GET /v1/functions/{name}`), and every benchmark's rows.

use std::time::Duration;

/// Percentiles of a set of latency samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Fastest sample.
    pub min: Duration,
    /// Median (nearest-rank).
    pub p50: Duration,
    /// 90th percentile (nearest-rank).
    pub p90: Duration,
    /// 99th percentile (nearest-rank).
    pub p99: Duration,
    /// Slowest sample.
    pub max: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
}

/// The nearest-rank percentile `p` (0..=100) of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Summary {
    /// Summarises `samples`; `None` if there are none.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let total: Duration = sorted.iter().sum();
        Some(Summary {
            count: sorted.len(),
            min: sorted[0],
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
            mean: total / sorted.len() as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn empty_has_no_summary() {
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        // 1..=100 ms in shuffled order: p50 is the 50th, p99 the 99th value.
        let mut values: Vec<u64> = (1..=100).collect();
        values.reverse();
        values.swap(3, 71);
        let s = Summary::of(&ms_list(&values)).unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.min, Duration::from_millis(1));
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p90, Duration::from_millis(90));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(s.mean, Duration::from_micros(50_500));
    }

    #[test]
    fn single_sample_is_every_percentile() {
        let s = Summary::of(&ms_list(&[7])).unwrap();
        assert_eq!(
            (s.min, s.p50, s.p99, s.max),
            (s.mean, s.mean, s.mean, s.mean)
        );
        assert_eq!(s.p50, Duration::from_millis(7));
    }

    #[test]
    fn p99_of_small_sets_is_the_tail() {
        let s = Summary::of(&ms_list(&[5, 1, 9])).unwrap();
        assert_eq!(s.p50, Duration::from_millis(5));
        assert_eq!(s.p99, Duration::from_millis(9));
    }
}
