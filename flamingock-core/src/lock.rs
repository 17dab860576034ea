//! The distributed lock: backend primitives ([`LockProvider`]) and the
//! protocol core drives on top of them (waiting, refreshing, lease checks,
//! release on every exit path).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tracing::{debug, info, warn};

use crate::deadline::human;
use crate::error::LockError;
use crate::events::{Emitter, Event};
use crate::shutdown::Shutdown;

pub use crate::model::LockInfo;

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// Fencing token: strictly greater than every token granted before.
    pub token: u64,
    /// When the lease ends (store clock where the store has one).
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// What a lock backend returns for a grant or an extension.
    pub fn new(token: u64, expires_at: DateTime<Utc>) -> Self {
        Lease { token, expires_at }
    }
}

/// The outcome of one acquisition attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The lock is ours.
    Acquired(Lease),
    /// Someone else holds a live lease.
    Held(LockInfo),
}

/// Backend primitives of the fenced lease lock; one lock per namespace.
///
/// Contract (checked by `flamingock-test-support`'s lock suite):
/// `try_acquire` is one atomic conditional write that succeeds when the lock is
/// free, expired, or already held by `owner`, and every grant returns a token
/// strictly greater than all tokens granted before (a counter that survives
/// releases and expiries). `extend` and `release` act only when owner and token
/// both match and return [`LockError::Lost`] otherwise.
///
/// A lock gives mutual exclusion for liveness only: safety never rests on
/// its tokens. A lock service may forget them (a Redis restart without
/// persistence, a failover) and grant the same token twice; the runner's
/// epoch comes from the audit store ([`AuditStore::claim_fence`](crate::AuditStore::claim_fence)),
/// which rejects the writes of every runner but the newest claimer.
///
/// Each method is a single attempt: waiting, backoff, deadlines, refresh and
/// events are the runner's.
#[async_trait]
pub trait LockProvider: Send + Sync + 'static {
    /// A human-readable name used in errors and logs.
    fn describe(&self) -> String;

    /// One acquisition attempt for `owner`, for `lease`.
    async fn try_acquire(&self, owner: &str, lease: Duration) -> Result<Acquire, LockError>;

    /// Extends the lease held by `owner` with `token` to `lease` from now.
    async fn extend(&self, owner: &str, token: u64, lease: Duration) -> Result<Lease, LockError>;

    /// Releases the lease held by `owner` with `token`.
    async fn release(&self, owner: &str, token: u64) -> Result<(), LockError>;

    /// The current holder, if any record exists. Never writes: where the
    /// lock's table (or key, or item) does not exist yet, nobody holds it.
    async fn inspect(&self) -> Result<Option<LockInfo>, LockError>;

    /// Removes the lock whoever holds it; returns what was removed. The token
    /// counter is kept, so the next grant still gets a higher token. Where
    /// the lock's table does not exist, there is nothing to remove and
    /// nothing is created.
    async fn force_release(&self) -> Result<Option<LockInfo>, LockError>;

    /// What to check when an operation on this lock does not answer within
    /// the runner's operation timeout (added to the timeout error).
    fn stall_hint(&self) -> Option<String> {
        None
    }
}

#[async_trait]
impl<L: LockProvider + ?Sized> LockProvider for Arc<L> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    async fn try_acquire(&self, owner: &str, lease: Duration) -> Result<Acquire, LockError> {
        (**self).try_acquire(owner, lease).await
    }
    async fn extend(&self, owner: &str, token: u64, lease: Duration) -> Result<Lease, LockError> {
        (**self).extend(owner, token, lease).await
    }
    async fn release(&self, owner: &str, token: u64) -> Result<(), LockError> {
        (**self).release(owner, token).await
    }
    async fn inspect(&self) -> Result<Option<LockInfo>, LockError> {
        (**self).inspect().await
    }
    async fn force_release(&self) -> Result<Option<LockInfo>, LockError> {
        (**self).force_release().await
    }
    fn stall_hint(&self) -> Option<String> {
        (**self).stall_hint()
    }
}

/// Lock timings.
///
/// ```
/// use std::time::Duration;
/// use flamingock_core::LockConfig;
/// let cfg = LockConfig::default().lease(Duration::from_secs(30));
/// assert_eq!(cfg.refresh_interval(), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockConfig {
    /// Lease duration (default 60 s).
    pub lease: Duration,
    /// The longest pause between two attempts of a waiting runner (default
    /// 1 s). Waiting starts at [`LockConfig::retry_initial`] and doubles up to
    /// this, with jitter; between attempts the waiter re-reads the audit
    /// snapshot (without the lock) and stops waiting as soon as nothing is
    /// left to do.
    pub retry_interval: Duration,
    /// The first pause of a waiting runner (default 25 ms).
    pub retry_initial: Duration,
    /// How long a runner waits before giving up (default 180 s).
    pub acquire_timeout: Duration,
    /// Refresh period; `None` = lease / 3.
    pub refresh: Option<Duration>,
    /// How often a waiting runner reports that it is still waiting (an
    /// INFO log and an [`Event::LockWaiting`](crate::Event::LockWaiting)),
    /// default 5 s.
    pub report_every: Duration,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            lease: Duration::from_secs(60),
            retry_interval: Duration::from_secs(1),
            retry_initial: Duration::from_millis(25),
            acquire_timeout: Duration::from_secs(180),
            refresh: None,
            report_every: Duration::from_secs(5),
        }
    }
}

impl LockConfig {
    /// Sets the lease duration.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
    /// Sets the longest pause between attempts of a waiting runner.
    pub fn retry_interval(mut self, d: Duration) -> Self {
        self.retry_interval = d;
        self
    }
    /// Sets the first pause of a waiting runner.
    pub fn retry_initial(mut self, d: Duration) -> Self {
        self.retry_initial = d;
        self
    }
    /// Sets how long to wait for the lock.
    pub fn acquire_timeout(mut self, d: Duration) -> Self {
        self.acquire_timeout = d;
        self
    }
    /// Sets the refresh period explicitly.
    pub fn refresh(mut self, d: Duration) -> Self {
        self.refresh = Some(d);
        self
    }
    /// Sets how often a waiting runner reports that it still waits.
    pub fn report_every(mut self, d: Duration) -> Self {
        self.report_every = d;
        self
    }
    /// The refresh period in force.
    pub fn refresh_interval(&self) -> Duration {
        self.refresh.unwrap_or(self.lease / 3)
    }
    /// The least lease time left under which a runner will not start another
    /// change, commit, or write to the audit.
    pub fn min_remaining(&self) -> Duration {
        self.lease / 4
    }
}

/// Capped exponential backoff with jitter for a waiting runner.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    cap: Duration,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, cap: Duration) -> Self {
        let seed = uuid::Uuid::new_v4().as_u64_pair().0 | 1;
        Backoff {
            next: initial.min(cap),
            cap,
            seed,
        }
    }

    /// The next pause: between half and all of the current step, which then doubles.
    pub(crate) fn pause(&mut self) -> Duration {
        // xorshift64: cheap jitter, so runners started together spread out.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = self.next;
        self.next = (self.next * 2).min(self.cap);
        let half = step / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_nanos(self.seed % nanos)
    }
}

#[derive(Debug)]
struct LeaseState {
    valid_until: Instant,
    lost: Option<String>,
    /// Why the latest refresh failed, while refreshes fail.
    refresh_error: Option<String>,
}

/// Aborts a spawned task when dropped, so a cancelled run never leaves a
/// refresher extending a lease nobody uses.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn report_wait(provider: &dyn LockProvider, holder: &LockInfo, waited: Duration, events: &Emitter) {
    info!(
        lock = %provider.describe(),
        holder = %holder.owner,
        token = holder.token,
        expires_at = %holder.expires_at,
        waited = %human(waited),
        "waiting for the lock held by {} (lease ends {}{})",
        holder.owner,
        holder.expires_at.format("%H:%M:%S%.3f UTC"),
        if holder.expired { ", already expired" } else { "" },
    );
    events.emit(Event::LockWaiting {
        lock: provider.describe(),
        holder: holder.owner.clone(),
        expires_at: holder.expires_at,
        waited,
    });
}

fn not_needed(started: Instant) -> Waited {
    info!(
        waited = %human(started.elapsed()),
        "another runner finished the work while this one waited; nothing left to do"
    );
    Waited::NotNeeded
}

/// A lease this runner holds, refreshed in the background until released
/// or dropped.
#[derive(Debug)]
pub(crate) struct HeldLease {
    provider: Arc<dyn LockProvider>,
    owner: String,
    token: u64,
    min_remaining: Duration,
    state: Arc<Mutex<LeaseState>>,
    events: Emitter,
    _refresher: AbortOnDrop,
}

impl std::fmt::Debug for dyn LockProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What waiting for the lock ended with.
#[derive(Debug)]
pub(crate) enum Waited {
    /// The lock is ours.
    Acquired(HeldLease),
    /// While waiting, the audit showed nothing left to do: another runner
    /// did the work. Nothing is held.
    NotNeeded,
}

/// Asked between two attempts while the lock is held by someone else:
/// `Ok(false)` ends the wait without the lock.
pub(crate) type StillNeeded<'a> =
    &'a mut (dyn FnMut() -> BoxFuture<'a, Result<bool, crate::Error>> + Send);

impl HeldLease {
    /// Waits for the lock per `cfg`: capped backoff with jitter, reported at
    /// its start and every `cfg.report_every`, ended early when
    /// `still_needed` says the work is done or `shutdown` is requested.
    pub(crate) async fn acquire(
        provider: Arc<dyn LockProvider>,
        owner: &str,
        cfg: &LockConfig,
        events: &Emitter,
        still_needed: StillNeeded<'_>,
        shutdown: &Shutdown,
    ) -> Result<Waited, crate::Error> {
        let started = Instant::now();
        let mut backoff = Backoff::new(cfg.retry_initial, cfg.retry_interval);
        let mut last_report: Option<Instant> = None;
        let mut seen_held = false;
        loop {
            // After a wait, look before writing: while a live lease is held
            // by someone else, a read answers (and, on a single-writer store
            // such as SQLite, keeps the holder's transactions from queueing
            // behind every waiter's write attempt).
            let still_held = match seen_held {
                true => provider
                    .inspect()
                    .await?
                    .filter(|h| !h.expired && h.owner != owner),
                false => None,
            };
            let holder = match still_held {
                Some(h) => h,
                None => {
                    let sent = Instant::now();
                    match provider.try_acquire(owner, cfg.lease).await? {
                        Acquire::Acquired(lease) => {
                            let waited = started.elapsed();
                            if last_report.is_some() {
                                info!(token = lease.token, waited = %human(waited), "lock acquired");
                            } else {
                                debug!(token = lease.token, "lock acquired");
                            }
                            events.emit(Event::LockAcquired {
                                lock: provider.describe(),
                                token: lease.token,
                                waited,
                            });
                            return Ok(Waited::Acquired(Self::start(
                                provider,
                                owner,
                                lease.token,
                                sent,
                                cfg,
                                events.clone(),
                            )));
                        }
                        Acquire::Held(h) => {
                            seen_held = true;
                            h
                        }
                    }
                }
            };
            let waited = started.elapsed();
            if last_report.is_none_or(|t| t.elapsed() >= cfg.report_every) {
                last_report = Some(Instant::now());
                report_wait(&*provider, &holder, waited, events);
            }
            let pause = backoff.pause();
            if waited + pause > cfg.acquire_timeout {
                return Err(LockError::Timeout {
                    lock: provider.describe(),
                    waited,
                    holder,
                }
                .into());
            }
            if let Some(stopped) = Self::pause(pause, shutdown, &holder).await {
                return Err(stopped);
            }
            if !still_needed().await? {
                return Ok(not_needed(started));
            }
        }
    }

    /// Sleeps `pause`, or returns the error of a shutdown requested meanwhile.
    async fn pause(
        pause: Duration,
        shutdown: &Shutdown,
        holder: &LockInfo,
    ) -> Option<crate::Error> {
        tokio::select! {
            () = tokio::time::sleep(pause) => None,
            () = shutdown.requested() => Some(crate::Error::Interrupted {
                run_id: String::new(),
                detail: format!(
                    "stopped waiting for the lock (held by {}); nothing was run, the next \
                     run starts from the same point",
                    holder.owner
                ),
                report: Box::default(),
            }),
        }
    }

    fn start(
        provider: Arc<dyn LockProvider>,
        owner: &str,
        token: u64,
        sent: Instant,
        cfg: &LockConfig,
        events: Emitter,
    ) -> HeldLease {
        let state = Arc::new(Mutex::new(LeaseState {
            valid_until: sent + cfg.lease,
            lost: None,
            refresh_error: None,
        }));
        let refresher = tokio::spawn(refresh_loop(
            provider.clone(),
            owner.to_owned(),
            token,
            *cfg,
            state.clone(),
            events.clone(),
        ));
        HeldLease {
            provider,
            owner: owner.to_owned(),
            token,
            min_remaining: cfg.min_remaining(),
            state,
            events,
            _refresher: AbortOnDrop(refresher),
        }
    }

    /// The lock's token (not the fencing epoch: that comes from the store).
    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    /// `Err(why)` when the lease is lost or too close to its end to start
    /// more work, commit, or write to the audit.
    pub(crate) fn check(&self) -> Result<(), String> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &st.lost {
            return Err(why.clone());
        }
        let left = st.valid_until.saturating_duration_since(Instant::now());
        if left < self.min_remaining {
            let why = match &st.refresh_error {
                Some(e) => format!("its refreshes are failing: {e}"),
                None => "refreshes are late or the process was paused".to_owned(),
            };
            return Err(format!(
                "only {} of the lease left (need {}); {why}",
                human(left),
                human(self.min_remaining)
            ));
        }
        Ok(())
    }

    /// Stops refreshing and releases the lock (conditional on owner and token).
    pub(crate) async fn release(self) -> Result<(), LockError> {
        drop(self._refresher);
        let lock = self.provider.describe();
        let res = self.provider.release(&self.owner, self.token).await;
        if res.is_ok() {
            debug!(token = self.token, "lock released");
            self.events.emit(Event::LockReleased {
                lock,
                token: self.token,
            });
        }
        res
    }
}

async fn refresh_loop(
    provider: Arc<dyn LockProvider>,
    owner: String,
    token: u64,
    cfg: LockConfig,
    state: Arc<Mutex<LeaseState>>,
    events: Emitter,
) {
    let (lease, every, margin) = (cfg.lease, cfg.refresh_interval(), cfg.min_remaining());
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        let res = provider.extend(&owner, token, lease).await;
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        match res {
            Ok(_) => {
                let left = st.valid_until.saturating_duration_since(sent);
                st.valid_until = sent + lease;
                st.refresh_error = None;
                if left < margin {
                    drop(st);
                    warn!(
                        left = %human(left),
                        "lease extended late: it had only {} left; this runner stopped \
                         starting new work meanwhile",
                        human(left)
                    );
                    events.emit(Event::LeaseExtendedLate {
                        lock: provider.describe(),
                        token,
                        left,
                    });
                }
            }
            Err(e @ LockError::Lost { .. }) => {
                warn!(error = %crate::error::Chain(&e), "lease lost: this runner will stop before its next write");
                st.lost = Some(e.to_string());
                drop(st);
                events.emit(Event::LeaseLost {
                    lock: provider.describe(),
                    token,
                    detail: e.to_string(),
                });
                return;
            }
            Err(e) => {
                warn!(error = %crate::error::Chain(&e), "lease refresh failed; will retry");
                st.refresh_error = Some(crate::error::Chain(&e).to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_small_doubles_and_stays_under_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        let first = b.pause();
        assert!(first >= Duration::from_millis(10) && first <= Duration::from_millis(20));
        let pauses: Vec<Duration> = (0..20).map(|_| b.pause()).collect();
        assert!(pauses.iter().all(|p| *p <= Duration::from_millis(500)));
        assert!(pauses[10] >= Duration::from_millis(250), "{pauses:?}");
    }
}
