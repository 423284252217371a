//! Latency summaries: nearest-rank percentiles over samples in milliseconds.
//!
//! Samples are signed: a watch event can reach a watcher before the writer has read its own
//! acknowledgement, and that shows as a negative delay rather than being hidden.

use std::time::Duration;

/// p50, p99 and max of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for no samples.
    pub fn of_millis(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            count: sorted.len(),
            p50: percentile(&sorted, 50.0),
            p99: percentile(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
        })
    }

    pub fn of_durations(samples: &[Duration]) -> Option<Summary> {
        let millis: Vec<f64> = samples.iter().map(|d| millis(*d)).collect();
        Summary::of_millis(&millis)
    }
}

/// A duration in (fractional) milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of ascending `sorted` (not empty): the smallest sample that at least
/// `p` percent of the samples are less than or equal to.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of_millis(&samples).unwrap();
        assert_eq!((s.p50, s.p99, s.max, s.count), (50.0, 99.0, 100.0, 100));
    }

    #[test]
    fn small_sets_take_the_top_for_p99() {
        let s = Summary::of_millis(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.p50, s.p99, s.max), (2.0, 3.0, 3.0));
        assert_eq!(Summary::of_millis(&[5.0]).unwrap().p50, 5.0);
    }

    #[test]
    fn negative_samples_are_kept() {
        let s = Summary::of_millis(&[-1.0, 4.0]).unwrap();
        assert_eq!(s.p50, -1.0);
    }

    #[test]
    fn no_samples_no_summary() {
        assert_eq!(Summary::of_millis(&[]), None);
    }
}
