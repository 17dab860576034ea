//! Fault injection and observation helpers used by the suites.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flamingock_core::fault::{FaultInjector, FaultPoint};
use flamingock_core::{Acquire, Lease, LockError, LockInfo, LockProvider};
use futures::future::BoxFuture;
use tokio::sync::Notify;

use crate::BoxError;

/// What to do at the chosen fault point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Freeze forever (the test then drops the run future: a crash).
    Crash,
    /// Freeze until [`Fault::resume`] is called.
    Pause,
    /// Return an error there.
    Fail,
}

/// A fault at one point of one change.
#[derive(Debug)]
pub struct Fault {
    point: FaultPoint,
    change_id: String,
    action: FaultAction,
    reached: Notify,
    resume: Notify,
    hits: AtomicUsize,
}

impl Fault {
    /// A fault at `point` of `change_id`.
    pub fn new(point: FaultPoint, change_id: &str, action: FaultAction) -> Arc<Self> {
        Arc::new(Fault {
            point,
            change_id: change_id.to_owned(),
            action,
            reached: Notify::new(),
            resume: Notify::new(),
            hits: AtomicUsize::new(0),
        })
    }

    /// Waits until a run reaches the point.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets a paused run go on.
    pub fn resume(&self) {
        self.resume.notify_one();
    }

    /// How many times the point was reached.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl FaultInjector for Fault {
    fn at<'a>(
        &'a self,
        point: FaultPoint,
        change_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            if point != self.point || change_id != self.change_id {
                return Ok(());
            }
            self.hits.fetch_add(1, Ordering::SeqCst);
            match self.action {
                FaultAction::Fail => Err(format!("injected failure at {point:?}").into()),
                FaultAction::Crash => {
                    self.reached.notify_one();
                    futures::future::pending::<()>().await;
                    Ok(())
                }
                FaultAction::Pause => {
                    self.reached.notify_one();
                    self.resume.notified().await;
                    Ok(())
                }
            }
        })
    }
}

/// Runs `fut` until `fault` is reached, then drops it, as a crash would.
///
/// # Panics
/// If `fut` completes before the fault point (the crash was never simulated).
pub async fn crash_at<F, T>(fut: F, fault: &Fault)
where
    F: std::future::Future<Output = T>,
    T: std::fmt::Debug,
{
    tokio::pin!(fut);
    tokio::select! {
        out = &mut fut => panic!("the run finished before reaching {:?} of '{}': {out:?}", fault.point, fault.change_id),
        _ = fault.reached() => {}
    }
    // `fut` is dropped here: connections and transactions are dropped mid-flight.
}

/// A [`LockProvider`] wrapper that counts calls, to prove the fast path
/// takes no lock.
#[derive(Debug)]
pub struct CountingLock<L> {
    inner: L,
    calls: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl<L: LockProvider> CountingLock<L> {
    /// Wraps `inner`.
    pub fn new(inner: L) -> Self {
        CountingLock {
            inner,
            calls: Arc::default(),
            log: Arc::default(),
        }
    }
    /// A handle on the call counter.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        self.calls.clone()
    }
    fn note(&self, what: &'static str) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    }
}

#[async_trait]
impl<L: LockProvider> LockProvider for CountingLock<L> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn try_acquire(&self, owner: &str, lease: Duration) -> Result<Acquire, LockError> {
        self.note("try_acquire");
        self.inner.try_acquire(owner, lease).await
    }
    async fn extend(&self, owner: &str, token: u64, lease: Duration) -> Result<Lease, LockError> {
        self.note("extend");
        self.inner.extend(owner, token, lease).await
    }
    async fn release(&self, owner: &str, token: u64) -> Result<(), LockError> {
        self.note("release");
        self.inner.release(owner, token).await
    }
    async fn inspect(&self) -> Result<Option<LockInfo>, LockError> {
        self.note("inspect");
        self.inner.inspect().await
    }
    async fn force_release(&self) -> Result<Option<LockInfo>, LockError> {
        self.note("force_release");
        self.inner.force_release().await
    }
}
