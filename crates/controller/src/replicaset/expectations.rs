//! Creates and deletes a replica set has made that its VMI cache has not shown yet: Kubernetes'
//! "expectations", which keep a slow watch from making a replica set create (or delete) twice.
//!
//! ```text
//!   create VMI ─► uid expected ──(cache has it, or the watch showed it)──► settled
//!   delete VMI ─► uid expected ──(cache shows it gone or being deleted)──► settled
//!   anything expected for longer than EXPECTATIONS_TIMEOUT ───────────────► settled (a lost event)
//! ```
//!
//! The creates are tracked by UID (returned by the create), so one watch event settles exactly the
//! create that made it. A watch event that arrives before the create's answer is recorded is
//! covered by also looking in the cache ([`Expectations::settle`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ferrovirt_api::kubevirt::VirtualMachineInstance;

use super::InFlight;

/// How long an expectation waits for its watch event (Kubernetes' figure); then it is dropped.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

/// One replica set's creates and deletes not yet seen in the cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectations {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

impl Expectations {
    /// A VMI with this UID was created.
    pub fn created(&mut self, uid: &str, now: Instant) {
        self.creates.insert(uid.to_string());
        self.since = Some(now);
    }

    /// The VMI with this UID was deleted (or marked for deletion).
    pub fn deleted(&mut self, uid: &str, now: Instant) {
        self.deletes.insert(uid.to_string());
        self.since = Some(now);
    }

    /// The watch showed `vmi` (added, changed or deleted).
    pub fn observed(&mut self, vmi: &VirtualMachineInstance) {
        let Some(uid) = vmi.metadata.uid.as_deref() else { return };
        self.creates.remove(uid);
        if vmi.metadata.deletion_timestamp.is_some() {
            self.deletes.remove(uid);
        }
    }

    /// Drops what the cache (`cached`: the VMIs of the namespace) already shows: created VMIs it
    /// holds, deleted VMIs it no longer holds or holds with a deletionTimestamp.
    pub fn settle(&mut self, cached: &[&VirtualMachineInstance]) {
        let find = |uid: &str| cached.iter().find(|v| v.metadata.uid.as_deref() == Some(uid));
        self.creates.retain(|uid| find(uid).is_none());
        self.deletes.retain(|uid| find(uid).is_some_and(|v| v.metadata.deletion_timestamp.is_none()));
    }

    /// Whether anything is still in flight at `now`. Expectations older than
    /// [`EXPECTATIONS_TIMEOUT`] are dropped.
    pub fn in_flight(&mut self, now: Instant) -> InFlight {
        if self.creates.is_empty() && self.deletes.is_empty() {
            self.since = None;
            return InFlight::Settled;
        }
        if self.since.is_some_and(|t| now.saturating_duration_since(t) >= EXPECTATIONS_TIMEOUT) {
            *self = Expectations::default();
            return InFlight::Settled;
        }
        InFlight::Pending
    }

    /// Number of creates and of deletes still expected.
    pub fn pending(&self) -> (usize, usize) {
        (self.creates.len(), self.deletes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn vmi(uid: &str, deleting: bool) -> VirtualMachineInstance {
        let mut v = VirtualMachineInstance::default();
        v.metadata.uid = Some(uid.into());
        v.metadata.deletion_timestamp = deleting.then(|| Time(Timestamp::now()));
        v
    }

    #[test]
    fn creates_settle_when_the_watch_or_the_cache_shows_them() {
        let t = Instant::now();
        let mut e = Expectations::default();
        assert_eq!(e.in_flight(t), InFlight::Settled);
        e.created("a", t);
        e.created("b", t);
        assert_eq!(e.in_flight(t), InFlight::Pending);
        e.observed(&vmi("a", false));
        assert_eq!(e.pending(), (1, 0));
        // The watch event for "b" came before the create was recorded: the cache has it.
        e.settle(&[&vmi("b", false)]);
        assert_eq!(e.in_flight(t), InFlight::Settled);
    }

    #[test]
    fn deletes_settle_when_the_cache_shows_them_gone_or_going() {
        let t = Instant::now();
        let mut e = Expectations::default();
        e.deleted("a", t);
        e.deleted("b", t);
        e.deleted("c", t);
        // Still shown alive: pending; a deletion timestamp or absence settles.
        e.settle(&[&vmi("a", false), &vmi("b", true)]);
        assert_eq!(e.pending(), (0, 1));
        assert_eq!(e.in_flight(t), InFlight::Pending);
        // A plain update of "a" settles nothing; being marked for deletion does.
        e.observed(&vmi("a", false));
        assert_eq!(e.in_flight(t), InFlight::Pending);
        e.observed(&vmi("a", true));
        assert_eq!(e.in_flight(t), InFlight::Settled);
    }

    #[test]
    fn lost_events_time_out() {
        let t = Instant::now();
        let mut e = Expectations::default();
        e.created("never-seen", t);
        assert_eq!(e.in_flight(t + EXPECTATIONS_TIMEOUT - Duration::from_secs(1)), InFlight::Pending);
        // A newer expectation restarts the clock.
        e.deleted("x", t + Duration::from_secs(10));
        assert_eq!(e.in_flight(t + EXPECTATIONS_TIMEOUT), InFlight::Pending);
        assert_eq!(e.in_flight(t + EXPECTATIONS_TIMEOUT + Duration::from_secs(10)), InFlight::Settled);
        assert_eq!(e.pending(), (0, 0));
    }
}
