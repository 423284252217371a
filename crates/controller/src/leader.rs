//! Leader election on a `coordination.k8s.io/v1` Lease, as Kubernetes' controllers do it: several
//! replicas of the controller (or the scheduler) run, one holds the Lease and works, the others
//! wait and take over when the holder stops renewing.
//!
//! ```text
//!  campaign ──(no Lease / empty holder / record unchanged for leaseDuration)──► take the Lease
//!     ▲                                                                           │
//!     │                                     renew every retryPeriod ◄─────────────┤ work(lost)
//!     └──── lost: no successful renewal for renewDeadline, or someone else holds it ┘
//! ```
//!
//! - Every write is a replace with the Lease's resourceVersion: of two candidates that both see an
//!   expired Lease, exactly one write succeeds.
//! - Expiry is judged by the candidate's own clock: a record (holder, renewTime) that has not
//!   changed for `lease_duration` since this candidate first saw it. Clocks of different machines
//!   are never compared.
//! - The holder stops working when it could not renew for `renew_deadline` (< `lease_duration`),
//!   so it has stopped before anyone else may take over.
//! - [`release`] on a clean shutdown empties the holder, so a standby takes over at once.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tracing::{info, warn};

/// How one replica campaigns for one Lease.
#[derive(Debug, Clone)]
pub struct Election {
    /// Namespace of the Lease (`kube-system`).
    pub namespace: String,
    /// Name of the Lease (e.g. `ferrovirt-controller`).
    pub name: String,
    /// This replica (unique: host name plus a random suffix).
    pub identity: String,
    /// How long a record may stay unchanged before a standby takes the Lease over.
    pub lease_duration: Duration,
    /// How long the leader keeps working without a successful renewal.
    pub renew_deadline: Duration,
    /// Pause between attempts (campaign and renewal).
    pub retry_period: Duration,
}

impl Election {
    /// Kubernetes' defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(name: impl Into<String>, identity: impl Into<String>) -> Election {
        Election {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// A unique identity for this process: `<host>_<random>`.
    pub fn default_identity() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "host".into());
        format!("{host}_{}", uuid::Uuid::new_v4())
    }
}

/// The part of a Lease that tells whether its holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `spec.holderIdentity` (empty counts as none).
    pub holder: Option<String>,
    /// `spec.renewTime` as written.
    pub renew_time: Option<String>,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record { holder: spec.holder_identity.filter(|h| !h.is_empty()), renew_time: spec.renew_time.map(|t| t.0.to_string()) }
    }
}

/// What a candidate does next (the pure part of the election).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// There is no Lease: create it, holding it.
    Create,
    /// Nobody holds it, or its holder stopped renewing: take it over.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds it and renews.
    Wait,
}

/// Decide from the Lease's record, how long this candidate has seen that exact record, and the
/// lease duration.
pub fn decide(record: Option<&Record>, me: &str, unchanged_for: Duration, lease_duration: Duration) -> Step {
    match record {
        None => Step::Create,
        Some(r) => match r.holder.as_deref() {
            Some(h) if h == me => Step::Renew,
            None => Step::Acquire,
            Some(_) if unchanged_for >= lease_duration => Step::Acquire,
            Some(_) => Step::Wait,
        },
    }
}

/// A candidate's memory of what it saw.
struct Observer {
    record: Option<Record>,
    since: Instant,
}

impl Observer {
    fn see(&mut self, record: Option<Record>) -> Duration {
        if record != self.record {
            self.record = record;
            self.since = Instant::now();
        }
        self.since.elapsed()
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One attempt to acquire or renew; `Ok(true)` when we hold the Lease afterwards.
async fn try_acquire_or_renew(leases: &Api<Lease>, e: &Election, seen: &mut Observer) -> Result<bool, kube::Error> {
    let current = leases.get_opt(&e.name).await?;
    let record = current.as_ref().map(Record::of);
    let unchanged_for = seen.see(record.clone());
    let secs = e.lease_duration.as_secs().max(1) as i32;
    match decide(record.as_ref(), &e.identity, unchanged_for, e.lease_duration) {
        Step::Wait => Ok(false),
        Step::Create => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(e.name.clone()), namespace: Some(e.namespace.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(e.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(err) => Err(err),
            }
        }
        step @ (Step::Acquire | Step::Renew) => {
            let mut lease = current.expect("a Lease to take over or renew");
            let spec = lease.spec.get_or_insert_with(Default::default);
            if step == Step::Acquire {
                spec.holder_identity = Some(e.identity.clone());
                spec.acquire_time = Some(now());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(secs);
            spec.renew_time = Some(now());
            // The resourceVersion read above makes this a compare-and-swap.
            match leases.replace(&e.name, &PostParams::default(), &lease).await {
                Ok(written) => {
                    seen.see(Some(Record::of(&written)));
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(err) => Err(err),
            }
        }
    }
}

/// Campaign for the Lease; while holding it, run `work` with a future that completes when the
/// Lease is lost. When it is lost, `work` is expected to stop, and the campaign starts again. An
/// error from `work` ends everything.
pub async fn run<F, Fut>(client: Client, e: Election, mut work: F) -> anyhow::Result<()>
where
    F: FnMut(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let leases: Api<Lease> = Api::namespaced(client, &e.namespace);
    let mut seen = Observer { record: None, since: Instant::now() };
    loop {
        // Campaign.
        let mut logged_wait = false;
        loop {
            match try_acquire_or_renew(&leases, &e, &mut seen).await {
                Ok(true) => break,
                Ok(false) => {
                    if !logged_wait {
                        let holder = seen.record.as_ref().and_then(|r| r.holder.clone()).unwrap_or_default();
                        info!(lease = %e.name, %holder, "waiting for the lease (standby)");
                        logged_wait = true;
                    }
                }
                Err(err) => warn!(lease = %e.name, error = %err, "leader election: reading or writing the lease failed"),
            }
            tokio::time::sleep(e.retry_period).await;
        }
        info!(lease = %e.name, identity = %e.identity, "became the leader");

        // Lead: renew in the background; `lost` completes when renewal fails for renew_deadline.
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
        let renewer = {
            let (leases, e) = (leases.clone(), e.clone());
            let mut seen = Observer { record: seen.record.clone(), since: seen.since };
            tokio::spawn(async move {
                let mut last_ok = Instant::now();
                loop {
                    tokio::time::sleep(e.retry_period).await;
                    let attempt = tokio::time::timeout(e.retry_period.max(Duration::from_secs(1)), try_acquire_or_renew(&leases, &e, &mut seen)).await;
                    match attempt {
                        Ok(Ok(true)) => last_ok = Instant::now(),
                        Ok(Ok(false)) => {
                            warn!(lease = %e.name, "the lease is held by someone else");
                            break;
                        }
                        Ok(Err(err)) => warn!(lease = %e.name, error = %err, "renewing the lease failed"),
                        Err(_) => warn!(lease = %e.name, "renewing the lease timed out"),
                    }
                    if last_ok.elapsed() >= e.renew_deadline {
                        warn!(lease = %e.name, "could not renew the lease within the renew deadline");
                        break;
                    }
                }
                let _ = lost_tx.send(());
            })
        };
        // The renewer stops with this future, however it ends (dropped included): a dead leader
        // must not keep renewing.
        let renewer = AbortOnDrop(renewer);
        let lost = Box::pin(async move {
            let _ = lost_rx.await;
        });
        let result = work(lost).await;
        drop(renewer);
        result?;
        info!(lease = %e.name, "lost the lease; campaigning again");
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Give the Lease up if we hold it (a clean shutdown), so a standby takes over at once.
pub async fn release(client: Client, e: &Election) {
    let leases: Api<Lease> = Api::namespaced(client, &e.namespace);
    let Ok(Some(mut lease)) = leases.get_opt(&e.name).await else { return };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(e.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now());
    match leases.replace(&e.name, &PostParams::default(), &lease).await {
        Ok(_) => info!(lease = %e.name, "released the lease"),
        Err(err) => warn!(lease = %e.name, error = %err, "releasing the lease failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(h: &str) -> Record {
        Record { holder: Some(h.into()), renew_time: Some("2026-01-01T00:00:00Z".into()) }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn steps() {
        assert_eq!(decide(None, "me", Duration::ZERO, D), Step::Create);
        assert_eq!(decide(Some(&held_by("me")), "me", Duration::from_secs(100), D), Step::Renew);
        assert_eq!(decide(Some(&held_by("other")), "me", Duration::from_secs(3), D), Step::Wait);
        assert_eq!(decide(Some(&held_by("other")), "me", D, D), Step::Acquire);
        let released = Record { holder: None, renew_time: None };
        assert_eq!(decide(Some(&released), "me", Duration::ZERO, D), Step::Acquire);
    }

    #[test]
    fn a_renewed_record_restarts_the_clock() {
        let mut o = Observer { record: None, since: Instant::now() - Duration::from_secs(60) };
        assert!(o.see(Some(held_by("other"))) < Duration::from_secs(1));
        o.since -= Duration::from_secs(20);
        assert!(o.see(Some(held_by("other"))) >= Duration::from_secs(20), "unchanged record: the clock runs on");
        let renewed = Record { holder: Some("other".into()), renew_time: Some("2026-01-01T00:00:02Z".into()) };
        assert!(o.see(Some(renewed)) < Duration::from_secs(1), "a renewal restarts it");
    }
}
