//! Leader election against a real in-process API server: of two candidates exactly one works at
//! any moment; when the leader dies (its task is killed, it never releases) the other takes over
//! within the lease duration; a leader that shuts down cleanly releases the Lease and the standby
//! takes over at once.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_for, Harness};
use ferrovirt_controller::leader::{self, Election};

fn election(identity: &str) -> Election {
    Election {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
        ..Election::new("test-controller", identity)
    }
}

/// A candidate whose work counts itself in `working` (and `led` once it started leading).
fn candidate(h: &Harness, identity: &'static str, working: Arc<AtomicUsize>, max: Arc<AtomicUsize>, led: Arc<AtomicUsize>) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let client = h.client.clone();
    tokio::spawn(leader::run(client, election(identity), move |lost| {
        let (working, max, led) = (working.clone(), max.clone(), led.clone());
        async move {
            let now = working.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            led.fetch_add(1, Ordering::SeqCst);
            lost.await;
            working.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_fast_failover() {
    let h = Harness::start().await;
    let working = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (led_a, led_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));

    let a = candidate(&h, "a", working.clone(), max.clone(), led_a.clone());
    wait_for(10, "a to lead", || async { (led_a.load(Ordering::SeqCst) == 1).then_some(()) }).await;
    let b = candidate(&h, "b", working.clone(), max.clone(), led_b.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(led_b.load(Ordering::SeqCst), 0, "b stays standby while a renews");

    // a dies without releasing: b takes over once the record has not changed for the lease duration.
    a.abort();
    let died = tokio::time::Instant::now();
    working.fetch_sub(1, Ordering::SeqCst); // a's work was killed with it
    wait_for(15, "b to take over", || async { (led_b.load(Ordering::SeqCst) == 1).then_some(()) }).await;
    let took = died.elapsed();
    assert!(took >= Duration::from_secs(2), "b took over after {took:?}, before a's lease could have run out");
    assert!(took < Duration::from_secs(8), "failover took {took:?}");

    // A third candidate waits; b releases on a clean shutdown and c leads right away.
    let led_c = Arc::new(AtomicUsize::new(0));
    let c = candidate(&h, "c", working.clone(), max.clone(), led_c.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.abort();
    working.fetch_sub(1, Ordering::SeqCst);
    let released = tokio::time::Instant::now();
    leader::release(h.client.clone(), &election("b")).await;
    wait_for(10, "c to take over", || async { (led_c.load(Ordering::SeqCst) == 1).then_some(()) }).await;
    assert!(released.elapsed() < Duration::from_secs(2), "after a release the standby leads at once ({:?})", released.elapsed());

    assert_eq!(max.load(Ordering::SeqCst), 1, "never two leaders working at once");
    c.abort();
    h.stop().await;
}
