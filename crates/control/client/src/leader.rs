//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! does it: a candidate takes the Lease when its holder has not renewed it within
//! `leaseDurationSeconds` (judged by the candidate's own clock, from when it last saw the record
//! change, never by comparing clocks), the leader renews it every retry period, and a leader that
//! could not renew for the renew deadline stops acting at once (the work future is dropped)
//! before anyone else may take over. A leader told to stop releases the Lease (client-go's
//! `ReleaseOnCancel`).
//!
//! Writes are optimistic (the Lease's resourceVersion), so two candidates never both win the
//! same term. `acquireTime`, `renewTime`, `leaseTransitions` and `holderIdentity` are kept as
//! client-go keeps them, so `kubectl get lease -n kube-system` reads the same.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// Timing of an election (client-go's defaults for kube-controller-manager and kube-scheduler).
#[derive(Clone, Debug)]
pub struct Timing {
    /// How long a holder's Lease stands after its last renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// A leader that could not renew for this long gives up leadership.
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { lease_duration: Duration::from_secs(15), renew_deadline: Duration::from_secs(10), retry_period: Duration::from_secs(2) }
    }
}

/// How long a stopping leader tries to release its Lease before it gives up (the Lease then
/// expires as if the leader had died).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// One candidate for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The record last seen and when (our clock) it was first seen so.
    observed: Option<(LeaseSpec, Instant)>,
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// We hold the Lease (newly or still).
    Held,
    /// Someone else holds it and it has not expired.
    Taken,
}

/// Why a leader stopped leading.
#[derive(Debug, PartialEq, Eq)]
enum Lost {
    /// No renewal succeeded for the renew deadline.
    Deadline,
    /// The Lease is held by this other candidate.
    Taken(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("lease {0}: {1}")]
    Api(String, #[source] kube::Error),
}

/// A unique identity for this process as candidate: `<hostname>_<random>` (client-go's
/// callers use the host name and a UUID).
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into());
    let suffix: String = (0..16).map(|_| char::from(b"0123456789abcdef"[rand::random::<usize>() % 16])).collect();
    format!("{host}_{suffix}")
}

impl LeaderElector {
    /// A candidate for the Lease `namespace/name` as `identity`.
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str, timing: Timing) -> Self {
        LeaderElector { api: Api::namespaced(client, namespace), name: name.to_string(), identity: identity.to_string(), timing, observed: None }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Run `lead` whenever this candidate is the leader, until `stop` resolves: wait to acquire
    /// the Lease, run `lead()` while renewing, and drop it the moment leadership is lost
    /// (renewal failed for the renew deadline, or `lead` returned), then stand again. When
    /// `stop` resolves while leading, the work is dropped first and then the Lease is released
    /// (client-go's `ReleaseOnCancel`: no holder, a duration of 1 s), so that another candidate,
    /// or this process started again, takes over at once instead of after the lease duration.
    pub async fn run<F, Fut>(mut self, mut lead: F, stop: impl Future<Output = ()>)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = self.acquire() => {}
                _ = &mut stop => return,
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
            let stopped = {
                let work = lead();
                tokio::pin!(work);
                tokio::select! {
                    _ = &mut work => {
                        tracing::warn!(lease = %self.name, "the leader's work ended");
                        false
                    }
                    lost = self.renew_until_lost() => {
                        match lost {
                            Lost::Deadline => tracing::error!(lease = %self.name, identity = %self.identity, "leadership lost: could not renew the lease within the renew deadline"),
                            Lost::Taken(holder) => tracing::warn!(lease = %self.name, identity = %self.identity, %holder, "leadership lost: the lease is held by another candidate"),
                        }
                        false
                    }
                    _ = &mut stop => true,
                }
            };
            if stopped {
                // The work is dropped: nothing acts for this candidate any more.
                match tokio::time::timeout(RELEASE_TIMEOUT, self.release()).await {
                    Ok(Ok(true)) => tracing::info!(lease = %self.name, identity = %self.identity, "released the lease"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "leader election: could not release the lease; another candidate takes over when it expires"),
                    Err(_) => tracing::warn!(lease = %self.name, "leader election: releasing the lease timed out; another candidate takes over when it expires"),
                }
                return;
            }
            self.observed = None;
        }
    }

    /// Give the Lease up if this candidate still holds it (an optimistic write: a Lease taken
    /// meanwhile is left alone). The record is client-go's on release: an empty holder, a
    /// duration of one second, acquire and renew times now, the transitions kept.
    async fn release(&mut self) -> Result<bool, ElectionError> {
        let lease_name = self.name.clone();
        let err = move |e| ElectionError::Api(lease_name.clone(), e);
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(&err)? else {
            return Ok(false);
        };
        let spec = lease.spec.take().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(chrono::Utc::now());
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(String::new()),
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: spec.lease_transitions,
            ..Default::default()
        });
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// Try until the Lease is ours.
    async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => return,
                Ok(Attempt::Taken) => {}
                Err(e) => tracing::debug!(error = %e, "leader election: acquire"),
            }
            tokio::time::sleep(jitter(self.timing.retry_period)).await;
        }
    }

    /// The holder of the Lease as last read.
    fn holder(&self) -> String {
        self.observed.as_ref().and_then(|(spec, _)| spec.holder_identity.clone()).unwrap_or_default()
    }

    /// Renew every retry period; return once no renewal succeeded for the renew deadline, or
    /// the Lease was found held by another candidate.
    async fn renew_until_lost(&mut self) -> Lost {
        let mut last_renew = Instant::now();
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            let left = self.timing.renew_deadline.saturating_sub(last_renew.elapsed());
            if left.is_zero() {
                return Lost::Deadline;
            }
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Held)) => last_renew = Instant::now(),
                Ok(Ok(Attempt::Taken)) => return Lost::Taken(self.holder()),
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election: renew"),
                Err(_) => {}
            }
            if last_renew.elapsed() >= self.timing.renew_deadline {
                return Lost::Deadline;
            }
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, ElectionError> {
        let now = MicroTime(chrono::Utc::now());
        let lease_name = self.name.clone();
        let err = move |e| ElectionError::Api(lease_name.clone(), e);
        let current = self.api.get_opt(&self.name).await.map_err(&err)?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.timing.lease_duration.as_secs() as i32),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(l) => {
                    self.observe(l.spec.unwrap_or_default());
                    Ok(Attempt::Held)
                }
                // Another candidate created it first.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Taken),
                Err(e) => Err(err(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        self.observe(spec.clone());
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() {
            let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
            let seen = self.observed.as_ref().map(|(_, at)| *at).unwrap_or_else(Instant::now);
            if seen.elapsed() < duration {
                return Ok(Attempt::Taken);
            }
        }
        let mut next = spec.clone();
        next.holder_identity = Some(self.identity.clone());
        next.lease_duration_seconds = Some(self.timing.lease_duration.as_secs() as i32);
        next.renew_time = Some(now.clone());
        if !ours {
            next.acquire_time = Some(now);
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(next);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(l) => {
                self.observe(l.spec.unwrap_or_default());
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Taken),
            Err(e) => Err(err(e)),
        }
    }

    /// Remember the record and, when it changed, when we saw it change.
    fn observe(&mut self, spec: LeaseSpec) {
        match &self.observed {
            Some((old, _)) if *old == spec => {}
            _ => self.observed = Some((spec, Instant::now())),
        }
    }
}

/// client-go's `wait.Jitter(period, 1.2)`: between one and 2.2 periods.
fn jitter(d: Duration) -> Duration {
    d + d.mul_f64(1.2 * rand::random::<f64>())
}
