use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;

use super::store::guard;
use crate::error::LockError;
use crate::lock::{Acquire, Lease, LockInfo, LockProvider};

#[derive(Debug, Default)]
struct LockState {
    holder: Option<Holder>,
    /// Last token granted; survives releases and expiries.
    counter: u64,
}

#[derive(Debug, Clone)]
struct Holder {
    owner: String,
    token: u64,
    expires: Instant,
}

impl Holder {
    fn info(&self, now: Instant) -> LockInfo {
        let left = self.expires.saturating_duration_since(now);
        LockInfo {
            owner: self.owner.clone(),
            token: self.token,
            expires_at: Utc::now()
                + chrono::Duration::from_std(left).unwrap_or(chrono::Duration::zero()),
            expired: self.expires <= now,
        }
    }
}

/// An in-memory fenced lease lock. Clones share the same lock.
#[derive(Debug, Clone)]
pub struct InMemoryLock {
    name: String,
    state: Arc<Mutex<LockState>>,
}

impl Default for InMemoryLock {
    fn default() -> Self {
        Self::named("memory-lock")
    }
}

impl InMemoryLock {
    /// A free lock.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn named(name: &str) -> Self {
        InMemoryLock {
            name: name.to_owned(),
            state: Arc::default(),
        }
    }

    /// How many times the lock was granted (for tests checking that looking
    /// at the lock never takes it).
    pub fn grants(&self) -> u64 {
        guard(&self.state).counter
    }

    fn lost(&self, owner: &str, token: u64) -> LockError {
        LockError::Lost {
            lock: self.name.clone(),
            owner: owner.to_owned(),
            token,
        }
    }
}

fn expires_at(lease: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

#[async_trait]
impl LockProvider for InMemoryLock {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn try_acquire(&self, owner: &str, lease: Duration) -> Result<Acquire, LockError> {
        // A real store is a round trip away: let other runners interleave.
        tokio::task::yield_now().await;
        let mut st = guard(&self.state);
        let now = Instant::now();
        if let Some(h) = &st.holder {
            if h.owner != owner && h.expires > now {
                return Ok(Acquire::Held(h.info(now)));
            }
        }
        st.counter += 1;
        let token = st.counter;
        st.holder = Some(Holder {
            owner: owner.to_owned(),
            token,
            expires: now + lease,
        });
        Ok(Acquire::Acquired(Lease::new(token, expires_at(lease))))
    }

    async fn extend(&self, owner: &str, token: u64, lease: Duration) -> Result<Lease, LockError> {
        let mut st = guard(&self.state);
        let now = Instant::now();
        match &mut st.holder {
            // An expired lease may be extended while nobody took it: the
            // token is unchanged, so the fence still orders it correctly.
            Some(h) if h.owner == owner && h.token == token => {
                h.expires = now + lease;
                Ok(Lease::new(token, expires_at(lease)))
            }
            _ => Err(self.lost(owner, token)),
        }
    }

    async fn release(&self, owner: &str, token: u64) -> Result<(), LockError> {
        let mut st = guard(&self.state);
        match &st.holder {
            Some(h) if h.owner == owner && h.token == token => {
                st.holder = None;
                Ok(())
            }
            _ => Err(self.lost(owner, token)),
        }
    }

    async fn inspect(&self) -> Result<Option<LockInfo>, LockError> {
        let st = guard(&self.state);
        Ok(st.holder.as_ref().map(|h| h.info(Instant::now())))
    }

    async fn force_release(&self) -> Result<Option<LockInfo>, LockError> {
        let mut st = guard(&self.state);
        let now = Instant::now();
        Ok(st.holder.take().map(|h| h.info(now)))
    }
}
