//! Closed-loop load: C workers share one counter of operations and each runs the next one as soon
//! as its previous one is answered, so at most C operations are in flight.
//!
//! ```text
//!   worker 0:  [op 0]──[op 2]──[op 5]── ...
//!   worker 1:  [op 1]────[op 3]─[op 4]─ ...        rate = total / wall time
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;

/// The outcome of a closed-loop run.
#[derive(Debug, Clone)]
pub struct Timed {
    /// From the first operation started to the last one answered.
    pub wall: Duration,
    /// One latency per operation, in no particular order.
    pub latencies: Vec<Duration>,
}

impl Timed {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Run `op(worker, i)` for every `i` in `0..total`, one worker task per element of `workers`.
/// The first failing operation fails the run (the other workers are aborted).
pub async fn closed_loop<W, F, Fut>(total: usize, workers: Vec<W>, op: F) -> anyhow::Result<Timed>
where
    W: Clone + Send + 'static,
    F: Fn(W, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    anyhow::ensure!(
        !workers.is_empty(),
        "a closed-loop run needs at least one worker"
    );
    let next = Arc::new(AtomicUsize::new(0));
    let op = Arc::new(op);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for worker in workers {
        let (next, op) = (next.clone(), op.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(latencies);
                }
                let began = Instant::now();
                op(worker.clone(), i)
                    .await
                    .with_context(|| format!("operation {i}"))?;
                latencies.push(began.elapsed());
            }
        });
    }
    let mut latencies = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.context("a load worker panicked")??);
    }
    Ok(Timed {
        wall: start.elapsed(),
        latencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_every_index_once_and_no_more_than_c_at_a_time() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let state = (seen.clone(), in_flight.clone(), peak.clone());
        let timed = closed_loop(
            50,
            vec![state; 4],
            |(seen, in_flight, peak), i| async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                seen.lock().unwrap().push(i);
                Ok(())
            },
        )
        .await
        .unwrap();
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert_eq!(timed.latencies.len(), 50);
        assert!(peak.load(Ordering::SeqCst) <= 4);
    }

    #[tokio::test]
    async fn a_failing_operation_fails_the_run() {
        let err = closed_loop(10, vec![(); 2], |(), i| async move {
            anyhow::ensure!(i != 3, "boom");
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("boom"), "{err:#}");
    }
}
