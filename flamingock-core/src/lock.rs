//! The distributed lock: backend primitives ([`LockProvider`]) and the
//! protocol core drives on top of them (waiting, refreshing, lease checks,
//! release on every exit path).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::error::LockError;

/// The current holder of a lock, as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Owner id (`service@hostname#uuid`).
    pub owner: String,
    /// Fencing token of the lease.
    pub token: u64,
    /// When the lease ends (store clock where the store has one).
    pub expires_at: DateTime<Utc>,
    /// Whether the lease has already ended, judged by the store.
    pub expired: bool,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Fencing token: strictly greater than every token granted before.
    pub token: u64,
    /// When the lease ends (store clock where the store has one).
    pub expires_at: DateTime<Utc>,
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

    /// The current holder, if any record exists.
    async fn inspect(&self) -> Result<Option<LockInfo>, LockError>;

    /// Removes the lock whoever holds it; returns what was removed. The token
    /// counter is kept, so the next grant still gets a higher token.
    async fn force_release(&self) -> Result<Option<LockInfo>, LockError>;
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
    /// How often a waiting runner retries (default 1 s).
    pub retry_interval: Duration,
    /// How long a runner waits before giving up (default 180 s).
    pub acquire_timeout: Duration,
    /// Refresh period; `None` = lease / 3.
    pub refresh: Option<Duration>,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            lease: Duration::from_secs(60),
            retry_interval: Duration::from_secs(1),
            acquire_timeout: Duration::from_secs(180),
            refresh: None,
        }
    }
}

impl LockConfig {
    /// Sets the lease duration.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
    /// Sets the retry interval of waiting runners.
    pub fn retry_interval(mut self, d: Duration) -> Self {
        self.retry_interval = d;
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
    /// The refresh period in force.
    pub fn refresh_interval(&self) -> Duration {
        self.refresh.unwrap_or(self.lease / 3)
    }
    /// The least lease time left under which a runner will not start another change.
    pub fn min_remaining(&self) -> Duration {
        self.lease / 4
    }
}

#[derive(Debug)]
struct LeaseState {
    valid_until: Instant,
    lost: Option<String>,
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

/// A lease this runner holds, refreshed in the background until released
/// or dropped.
#[derive(Debug)]
pub(crate) struct HeldLease {
    provider: Arc<dyn LockProvider>,
    owner: String,
    token: u64,
    min_remaining: Duration,
    state: Arc<Mutex<LeaseState>>,
    _refresher: AbortOnDrop,
}

impl std::fmt::Debug for dyn LockProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl HeldLease {
    /// Waits for the lock per `cfg`.
    pub(crate) async fn acquire(
        provider: Arc<dyn LockProvider>,
        owner: &str,
        cfg: &LockConfig,
    ) -> Result<HeldLease, LockError> {
        let started = Instant::now();
        loop {
            let sent = Instant::now();
            match provider.try_acquire(owner, cfg.lease).await? {
                Acquire::Acquired(lease) => {
                    debug!(token = lease.token, "lock acquired");
                    return Ok(Self::start(provider, owner, lease.token, sent, cfg));
                }
                Acquire::Held(holder) => {
                    let waited = started.elapsed();
                    if waited + cfg.retry_interval > cfg.acquire_timeout {
                        return Err(LockError::Timeout {
                            lock: provider.describe(),
                            waited,
                            holder,
                        });
                    }
                    debug!(holder = %holder.owner, "lock held, waiting");
                    tokio::time::sleep(cfg.retry_interval).await;
                }
            }
        }
    }

    fn start(
        provider: Arc<dyn LockProvider>,
        owner: &str,
        token: u64,
        sent: Instant,
        cfg: &LockConfig,
    ) -> HeldLease {
        let state = Arc::new(Mutex::new(LeaseState {
            valid_until: sent + cfg.lease,
            lost: None,
        }));
        let refresher = tokio::spawn(refresh_loop(
            provider.clone(),
            owner.to_owned(),
            token,
            cfg.lease,
            cfg.refresh_interval(),
            state.clone(),
        ));
        HeldLease {
            provider,
            owner: owner.to_owned(),
            token,
            min_remaining: cfg.min_remaining(),
            state,
            _refresher: AbortOnDrop(refresher),
        }
    }

    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    /// `Err(why)` when the lease is lost or too close to its end to start more work.
    pub(crate) fn check(&self) -> Result<(), String> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &st.lost {
            return Err(why.clone());
        }
        let left = st.valid_until.saturating_duration_since(Instant::now());
        if left < self.min_remaining {
            return Err(format!(
                "only {left:?} of the lease left (need {:?}); refreshes are failing",
                self.min_remaining
            ));
        }
        Ok(())
    }

    /// Stops refreshing and releases the lock (conditional on owner and token).
    pub(crate) async fn release(self) -> Result<(), LockError> {
        drop(self._refresher);
        self.provider.release(&self.owner, self.token).await
    }
}

async fn refresh_loop(
    provider: Arc<dyn LockProvider>,
    owner: String,
    token: u64,
    lease: Duration,
    every: Duration,
    state: Arc<Mutex<LeaseState>>,
) {
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        let res = provider.extend(&owner, token, lease).await;
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        match res {
            Ok(_) => st.valid_until = sent + lease,
            Err(e @ LockError::Lost { .. }) => {
                warn!(error = %e, "lease lost");
                st.lost = Some(e.to_string());
                return;
            }
            Err(e) => warn!(error = %e, "lease refresh failed; will retry"),
        }
    }
}
