//! A work queue of object keys with client-go's guarantees:
//!
//! - a key is queued at most once, however often it is added;
//! - a key is handed to one worker at a time: added while a worker has it, it is queued again
//!   when that worker is done, so the latest change is always looked at;
//! - a key can be added after a delay (requeue), and failures back off per key.
//!
//! ```text
//!   add ──► queued ──next──► active ──done──► (added meanwhile? ──► queued)
//!              ▲                 │
//!              └── add_after ◄───┘ (requeue, retry)
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

/// First retry delay after a failure; doubled per further failure.
pub const RETRY_BASE: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

struct State<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    active: HashSet<K>,
    again: HashSet<K>,
    failures: HashMap<K, u32>,
    shut_down: bool,
}

/// A deduplicating work queue; share it behind an [`Arc`].
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                again: HashSet::new(),
                failures: HashMap::new(),
                shut_down: false,
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // A panic while holding the lock leaves the sets consistent (each operation is one step).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `key` (once), or marks it to be queued again when its worker is done.
    pub fn add(&self, key: K) {
        let mut s = self.lock();
        if s.shut_down {
            return;
        }
        if s.active.contains(&key) {
            s.again.insert(key);
        } else if s.queued.insert(key.clone()) {
            s.queue.push_back(key);
            drop(s);
            self.notify.notify_waiters();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = queue.upgrade() {
                q.add(key);
            }
        });
    }

    /// The next key to work on, once there is one; `None` after [`WorkQueue::shut_down`].
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.shut_down {
                    return None;
                }
                if let Some(key) = s.queue.pop_front() {
                    s.queued.remove(&key);
                    s.active.insert(key.clone());
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// The worker is done with `key`; queues it again if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut s = self.lock();
        s.active.remove(key);
        if s.again.remove(key) && !s.shut_down && s.queued.insert(key.clone()) {
            s.queue.push_back(key.clone());
            drop(s);
            self.notify.notify_waiters();
        }
    }

    /// Records a failure of `key` and returns how long to wait before the retry.
    pub fn failed(&self, key: &K) -> Duration {
        let mut s = self.lock();
        let n = s.failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        RETRY_BASE.saturating_mul(1u32 << (*n - 1).min(16)).min(RETRY_MAX)
    }

    /// Forgets the failures of `key` (it succeeded).
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// Stops handing out keys; waiting workers get `None`.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.notify.notify_waiters();
    }

    /// Keys queued and not yet handed out.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, Some("a"));
        assert_eq!(q.next().await, Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_active_comes_back_after_done() {
        let q = WorkQueue::new();
        q.add("a");
        let k = q.next().await.unwrap();
        q.add("a");
        q.add("a");
        // Not handed out twice at once.
        assert!(q.is_empty());
        q.done(&k);
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, Some("a"));
        q.done(&"a");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn waiting_workers_wake_up() {
        let q = WorkQueue::new();
        let q2 = q.clone();
        let worker = tokio::spawn(async move { q2.next().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.add(7);
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), worker).await.unwrap().unwrap(), Some(7));
    }

    #[tokio::test]
    async fn delayed_adds_and_shutdown() {
        let q = WorkQueue::new();
        q.add_after("late", Duration::from_millis(30));
        assert!(q.is_empty());
        let got = tokio::time::timeout(Duration::from_secs(5), q.next()).await.unwrap();
        assert_eq!(got, Some("late"));
        q.shut_down();
        assert_eq!(q.next().await, None);
        q.add("x");
        assert!(q.is_empty());
    }

    #[test]
    fn failures_back_off_until_forgotten() {
        let q: Arc<WorkQueue<&str>> = WorkQueue::new();
        let delays: Vec<Duration> = (0..12).map(|_| q.failed(&"k")).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[11], RETRY_MAX);
        q.forget(&"k");
        assert_eq!(q.failed(&"k"), RETRY_BASE);
    }
}
