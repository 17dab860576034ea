//! The lock provider contract, and the waiting protocol core drives on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flamingock_core::memory::InMemoryAuditStore;
use flamingock_core::{Acquire, Error, Flamingock, LockConfig, LockError, LockProvider};

use crate::{namespace, BoxError};

/// What a lock provider supports.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct LockCapabilities {
    /// Concurrent acquirers in [`mutual_exclusion`].
    pub concurrent_acquirers: usize,
    /// A lease short enough to wait out in tests, long enough for the
    /// backend's clock resolution.
    pub short_lease: Duration,
}

impl Default for LockCapabilities {
    fn default() -> Self {
        LockCapabilities {
            concurrent_acquirers: 16,
            short_lease: Duration::from_millis(400),
        }
    }
}

impl LockCapabilities {
    /// Sets the short lease.
    pub fn short_lease(mut self, d: Duration) -> Self {
        self.short_lease = d;
        self
    }
}

/// A lock provider implementation under test.
#[async_trait]
pub trait LockUnderTest: Send + Sync + 'static {
    /// Opens the lock of namespace `ns`: the same `ns` gives the same lock,
    /// every call gives new connections.
    async fn open(&self, ns: &str) -> Result<Arc<dyn LockProvider>, BoxError>;
    /// Drops everything of `ns`.
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError>;
    /// What the provider supports.
    fn capabilities(&self) -> LockCapabilities {
        LockCapabilities::default()
    }
}

async fn with_lock<S, F, Fut>(sut: &S, check: F)
where
    S: LockUnderTest,
    F: FnOnce(Arc<dyn LockProvider>, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ns = namespace("lock");
    let lock = sut.open(&ns).await.expect("open lock");
    let result =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(check(lock, ns.clone())))
            .await;
    if let Err(e) = sut.cleanup(&ns).await {
        eprintln!("cleanup of {ns} failed: {e}");
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

const LONG: Duration = Duration::from_secs(30);

async fn acquired(lock: &dyn LockProvider, owner: &str, lease: Duration) -> u64 {
    match lock.try_acquire(owner, lease).await.expect("try_acquire") {
        Acquire::Acquired(l) => l.token,
        Acquire::Held(h) => panic!("{owner} expected the lock, it is held by {h:?}"),
    }
}

fn is_lost<T: std::fmt::Debug>(r: Result<T, LockError>) -> bool {
    matches!(r, Err(LockError::Lost { .. }))
}

/// Acquire, inspect, release; the lock is then free.
pub async fn acquire_inspect_release<S: LockUnderTest>(sut: &S) {
    with_lock(sut, |lock, _| async move {
        assert!(
            lock.inspect().await.expect("inspect").is_none(),
            "a new lock is free"
        );
        let token = acquired(&*lock, "a", LONG).await;
        assert!(token > 0, "tokens start above 0 (0 means 'no fence')");
        let info = lock.inspect().await.expect("inspect").expect("held");
        assert_eq!(info.owner, "a");
        assert_eq!(info.token, token);
        assert!(!info.expired);
        assert!(info.expires_at > chrono::Utc::now() + chrono::Duration::seconds(20));
        lock.release("a", token).await.expect("release");
        assert!(
            lock.inspect().await.expect("inspect").is_none(),
            "released lock is free"
        );
        acquired(&*lock, "b", LONG).await;
    })
    .await;
}

/// While held, others get `Held` naming the holder.
pub async fn held_lock_names_holder<S: LockUnderTest>(sut: &S) {
    with_lock(sut, |lock, _| async move {
        let token = acquired(&*lock, "a", LONG).await;
        match lock.try_acquire("b", LONG).await.expect("try_acquire") {
            Acquire::Held(h) => {
                assert_eq!(h.owner, "a");
                assert_eq!(h.token, token);
                assert!(!h.expired);
            }
            other => panic!("b must not get a held lock: {other:?}"),
        }
    })
    .await;
}

/// N acquirers on separate connections at once: exactly one wins.
pub async fn mutual_exclusion<S: LockUnderTest>(sut: &S) {
    let n = sut.capabilities().concurrent_acquirers;
    with_lock(sut, |_, ns| async move {
        let mut handles = Vec::new();
        for _ in 0..n {
            handles.push(sut.open(&ns).await.expect("open"));
        }
        let attempts = handles.iter().enumerate().map(|(i, l)| {
            let owner = format!("owner-{i}");
            async move { l.try_acquire(&owner, LONG).await.expect("try_acquire") }
        });
        let results = futures::future::join_all(attempts).await;
        let winners = results
            .iter()
            .filter(|r| matches!(r, Acquire::Acquired(_)))
            .count();
        assert_eq!(
            winners, 1,
            "exactly one of {n} concurrent acquirers wins: {results:?}"
        );
    })
    .await;
}

/// The owner can take its own lock again, with a new, higher token.
pub async fn reacquire_by_owner<S: LockUnderTest>(sut: &S) {
    with_lock(sut, |lock, _| async move {
        let t1 = acquired(&*lock, "a", LONG).await;
        let t2 = acquired(&*lock, "a", LONG).await;
        assert!(t2 > t1, "every grant has a higher token ({t1} then {t2})");
        assert!(
            is_lost(lock.release("a", t1).await),
            "the old token no longer releases"
        );
        lock.release("a", t2)
            .await
            .expect("release with current token");
    })
    .await;
}

/// Tokens strictly increase across owners, releases, force releases and expiries.
pub async fn tokens_strictly_increase<S: LockUnderTest>(sut: &S) {
    let short = sut.capabilities().short_lease;
    with_lock(sut, |lock, _| async move {
        let mut last = 0;
        for round in 0..3 {
            let t = acquired(&*lock, &format!("r{round}"), LONG).await;
            assert!(t > last, "token {t} after {last}");
            last = t;
            lock.release(&format!("r{round}"), t)
                .await
                .expect("release");
        }
        let t = acquired(&*lock, "f", LONG).await;
        assert!(t > last);
        last = t;
        lock.force_release().await.expect("force release");
        let t = acquired(&*lock, "g", short).await;
        assert!(t > last, "token after force release");
        last = t;
        tokio::time::sleep(short + Duration::from_millis(300)).await;
        let t = acquired(&*lock, "h", LONG).await;
        assert!(t > last, "token after expiry");
    })
    .await;
}

/// An expired lease is taken over; the old owner can neither extend nor release.
pub async fn expiry_and_takeover<S: LockUnderTest>(sut: &S) {
    let short = sut.capabilities().short_lease;
    with_lock(sut, |lock, ns| async move {
        let ta = acquired(&*lock, "a", short).await;
        tokio::time::sleep(short + Duration::from_millis(300)).await;
        let info = lock.inspect().await.expect("inspect");
        if let Some(info) = info {
            assert!(
                info.expired,
                "lease past its end must read as expired: {info:?}"
            );
        }
        let other = sut.open(&ns).await.expect("open");
        let tb = acquired(&*other, "b", LONG).await;
        assert!(tb > ta);
        assert!(
            is_lost(lock.extend("a", ta, LONG).await),
            "old owner cannot extend"
        );
        assert!(
            is_lost(lock.release("a", ta).await),
            "old owner cannot release"
        );
        let info = lock.inspect().await.expect("inspect").expect("held");
        assert_eq!((info.owner.as_str(), info.token), ("b", tb));
    })
    .await;
}

/// Extend works only for the owner with its token, and pushes the expiry out.
pub async fn extend_only_by_owner<S: LockUnderTest>(sut: &S) {
    let short = sut.capabilities().short_lease;
    with_lock(sut, |lock, _| async move {
        let t = acquired(&*lock, "a", short).await;
        assert!(
            is_lost(lock.extend("b", t, LONG).await),
            "another owner cannot extend"
        );
        assert!(
            is_lost(lock.extend("a", t + 1, LONG).await),
            "a wrong token cannot extend"
        );
        let lease = lock.extend("a", t, LONG).await.expect("owner extends");
        assert_eq!(lease.token, t, "extending keeps the token");
        tokio::time::sleep(short + Duration::from_millis(300)).await;
        match lock.try_acquire("b", LONG).await.expect("try_acquire") {
            Acquire::Held(h) => assert_eq!(h.owner, "a"),
            other => panic!("the extended lease must still hold: {other:?}"),
        }
    })
    .await;
}

/// Release works only for the owner with its token.
pub async fn release_only_by_owner<S: LockUnderTest>(sut: &S) {
    with_lock(sut, |lock, _| async move {
        let t = acquired(&*lock, "a", LONG).await;
        assert!(is_lost(lock.release("b", t).await));
        assert!(is_lost(lock.release("a", t + 1).await));
        assert_eq!(
            lock.inspect().await.expect("inspect").expect("held").owner,
            "a"
        );
        lock.release("a", t).await.expect("release");
        assert!(
            is_lost(lock.release("a", t).await),
            "a second release says Lost"
        );
    })
    .await;
}

/// Force release removes any holder and reports it.
pub async fn force_release<S: LockUnderTest>(sut: &S) {
    with_lock(sut, |lock, _| async move {
        assert!(lock
            .force_release()
            .await
            .expect("force on free lock")
            .is_none());
        let t = acquired(&*lock, "a", LONG).await;
        let removed = lock
            .force_release()
            .await
            .expect("force")
            .expect("was held");
        assert_eq!((removed.owner.as_str(), removed.token), ("a", t));
        let t2 = acquired(&*lock, "b", LONG).await;
        assert!(t2 > t);
        assert!(is_lost(lock.extend("a", t, LONG).await));
    })
    .await;
}

/// The runner waits for a held lock, gives up after its timeout with an
/// error naming the holder, and proceeds once the lock is released.
pub async fn runner_waits_then_times_out_naming_holder<S: LockUnderTest>(sut: &S) {
    with_lock(sut, |lock, ns| async move {
        let holder_token = acquired(&*lock, "holder@host#1", LONG).await;
        let runner_lock = sut.open(&ns).await.expect("open");
        let store = InMemoryAuditStore::new();
        let runner = Flamingock::builder()
            .audit_store(store.clone())
            .lock_provider(runner_lock)
            .target(store.shared_target("kv"))
            .stage(crate::memory::one_change_stage("waits"))
            .lock_config(
                LockConfig::default()
                    .retry_interval(Duration::from_millis(100))
                    .acquire_timeout(Duration::from_millis(800)),
            )
            .build()
            .expect("build");
        let started = Instant::now();
        match runner.run().await {
            Err(Error::Lock(LockError::Timeout { holder, .. })) => {
                assert_eq!(holder.owner, "holder@host#1");
                assert_eq!(holder.token, holder_token);
            }
            other => panic!("expected a lock timeout naming the holder, got {other:?}"),
        }
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "it waited before giving up"
        );
        // Released while a runner waits: it proceeds.
        let lock2 = lock.clone();
        let release = async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            lock2
                .release("holder@host#1", holder_token)
                .await
                .expect("release");
        };
        let runner = Flamingock::builder()
            .audit_store(store.clone())
            .lock_provider(sut.open(&ns).await.expect("open"))
            .target(store.shared_target("kv"))
            .stage(crate::memory::one_change_stage("waits"))
            .lock_config(
                LockConfig::default()
                    .retry_interval(Duration::from_millis(100))
                    .acquire_timeout(Duration::from_secs(10)),
            )
            .build()
            .expect("build");
        let (report, ()) = tokio::join!(runner.run(), release);
        let report = report.expect("run after release");
        assert_eq!(report.applied(), ["waits"]);
        assert!(
            lock.inspect().await.expect("inspect").is_none(),
            "the runner released the lock"
        );
    })
    .await;
}

/// The runner keeps its lease alive past the lease duration while it works.
pub async fn runner_refreshes_lease<S: LockUnderTest>(sut: &S) {
    let short = sut.capabilities().short_lease;
    with_lock(sut, |lock, ns| async move {
        let store = InMemoryAuditStore::new();
        let lease = short * 3;
        let runner = Flamingock::builder()
            .audit_store(store.clone())
            .lock_provider(lock.clone())
            .target(store.shared_target("kv"))
            .stage(crate::memory::slow_change_stage("slow", lease * 2))
            .lock_config(LockConfig::default().lease(lease))
            .build()
            .expect("build");
        let other = sut.open(&ns).await.expect("open");
        let probe = async {
            tokio::time::sleep(lease + lease / 2).await;
            other
                .try_acquire("intruder", LONG)
                .await
                .expect("try_acquire")
        };
        let (report, probe) = tokio::join!(runner.run(), probe);
        assert!(
            matches!(probe, Acquire::Held(_)),
            "lease must be refreshed while working: {probe:?}"
        );
        assert_eq!(report.expect("run").applied(), ["slow"]);
    })
    .await;
}

/// Expands to one `#[tokio::test]` per lock check. Takes the path of an
/// `async fn() -> Option<impl LockUnderTest>`.
#[macro_export]
macro_rules! lock_tests {
    ($sut:path) => {
        $crate::__suite_tests!($sut, lock_suite: [
            acquire_inspect_release,
            held_lock_names_holder,
            mutual_exclusion,
            reacquire_by_owner,
            tokens_strictly_increase,
            expiry_and_takeover,
            extend_only_by_owner,
            release_only_by_owner,
            force_release,
            runner_waits_then_times_out_naming_holder,
            runner_refreshes_lease,
        ]);
    };
}
