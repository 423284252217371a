//! A work queue of keys (pod UIDs): each key is queued at most once and handled by one worker at
//! a time; a key added while it is being handled is handled again afterwards.
//!
//! ```text
//!  add(k) ──► queued? ── yes ──► (nothing)
//!              │ no
//!              ├─ active? ── yes ──► dirty: again after done(k)
//!              └─ push ──► next() ──► worker ──► done(k)
//! ```

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Default)]
struct Inner {
    queue: VecDeque<String>,
    queued: HashSet<String>,
    active: HashSet<String>,
    dirty: HashSet<String>,
}

/// See the module documentation.
#[derive(Default)]
pub struct WorkQueue {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl WorkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `key` (once).
    pub fn add(&self, key: &str) {
        let mut inner = self.lock();
        if inner.active.contains(key) {
            inner.dirty.insert(key.to_string());
        } else if inner.queued.insert(key.to_string()) {
            inner.queue.push_back(key.to_string());
            drop(inner);
            self.notify.notify_one();
        }
    }

    /// The next key to handle; the caller must call [`WorkQueue::done`] with it.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.notify.notified();
            {
                let mut inner = self.lock();
                if let Some(key) = inner.queue.pop_front() {
                    inner.queued.remove(&key);
                    inner.active.insert(key.clone());
                    if !inner.queue.is_empty() {
                        self.notify.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    /// `key` is handled; queue it again if it was added meanwhile.
    pub fn done(&self, key: &str) {
        let again = {
            let mut inner = self.lock();
            inner.active.remove(key);
            inner.dirty.remove(key)
        };
        if again {
            self.add(key);
        }
    }

    /// Keys waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no key waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_requeued_when_added_while_active() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        let a = q.next().await;
        assert_eq!(a, "a");
        q.add("a"); // while active
        assert_eq!(q.len(), 1, "not queued while active");
        assert_eq!(q.next().await, "b");
        q.done("b");
        q.done("a");
        assert_eq!(q.next().await, "a", "handled again");
        q.done("a");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_worker_wakes_up() {
        let q = std::sync::Arc::new(WorkQueue::default());
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::task::yield_now().await;
        q.add("x");
        let key = tokio::time::timeout(std::time::Duration::from_secs(5), worker).await.unwrap().unwrap();
        assert_eq!(key, "x");
    }
}
