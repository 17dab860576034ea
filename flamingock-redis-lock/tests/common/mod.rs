//! What the test files share: the Redis under test and the check that a
//! runner whose Redis lease vanished mid-change cannot commit.
#![allow(dead_code, unreachable_pub)]

use std::marker::PhantomData;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use flamingock_core::fault::{FaultInjector, FaultPoint};
use flamingock_core::{
    AuditState, BoxError, Change, ChangeMeta, ChangeResult, Error, Flamingock, HistoryFilter,
    LockConfig, LockProvider, Stage, TargetSystem,
};
use flamingock_redis_lock::RedisLock;
use flamingock_test_support::faults::{Fault, FaultAction};
use flamingock_test_support::pipeline_suite::{PipelineEnv, PipelineUnderTest};
use flamingock_test_support::{namespace, require_service, services};

/// The Redis server under test, with every key of this test binary under
/// one random prefix.
#[derive(Debug, Clone)]
pub struct Redis {
    pub url: String,
    pub prefix: String,
}

/// One prefix per test process, shared with the child processes it starts.
static PREFIX: LazyLock<String> = LazyLock::new(|| {
    format!(
        "rlk_{}",
        flamingock_test_support::process_suite::family_id()
    )
});

/// The Redis under test, or `None` when the test must be skipped (loudly).
pub fn redis() -> Option<Redis> {
    let url = require_service(&services::REDIS);
    Some(Redis {
        url,
        prefix: PREFIX.clone(),
    })
}

impl Redis {
    /// A new lock (new connection) for namespace `ns`.
    pub async fn lock(&self, ns: &str) -> Result<RedisLock, BoxError> {
        Ok(RedisLock::builder(&self.url)
            .name(ns)
            .prefix(self.prefix.as_str())
            .build()
            .await?)
    }

    fn key(&self, ns: &str, which: &str) -> String {
        format!("{{{}:{ns}}}:{which}", self.prefix)
    }

    async fn del(&self, keys: &[String]) -> Result<i64, BoxError> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        Ok(redis::cmd("DEL").arg(keys).query_async(&mut conn).await?)
    }

    /// Deletes both keys of `ns` (a plain connection, nothing of the crate's).
    pub async fn delete_keys(&self, ns: &str) -> Result<(), BoxError> {
        self.del(&[self.key(ns, "lock"), self.key(ns, "token")])
            .await
            .map(drop)
    }

    /// The keys of `ns` that exist (the lock and its token counter).
    pub async fn keys_of(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut found = Vec::new();
        for k in [self.key(ns, "lock"), self.key(ns, "token")] {
            let n: i64 = redis::cmd("EXISTS").arg(&k).query_async(&mut conn).await?;
            if n > 0 {
                found.push(k);
            }
        }
        Ok(found)
    }

    /// Deletes the lock key of `ns` only, as an expiry (or a failover that
    /// lost it) would; the counter stays.
    pub async fn expire_lease(&self, ns: &str) -> Result<(), BoxError> {
        match self.del(&[self.key(ns, "lock")]).await? {
            1 => Ok(()),
            n => Err(format!("expected to delete 1 lock key, deleted {n}").into()),
        }
    }
}

/// The change of the expiry check. Each application bumps its own counter
/// key, so the stalled runner's uncommitted row never blocks the runner
/// that took over (a real database would make it wait on the row lock),
/// and the keys tell how many applications were committed.
struct Bump<H> {
    keys: Arc<Mutex<Vec<String>>>,
    _h: PhantomData<fn() -> H>,
}

impl<H: PipelineUnderTest> Change for Bump<H> {
    type Target = H::Target;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("bump").order("0001").author("test")
    }
    async fn apply(&self, ctx: &mut <H::Target as TargetSystem>::Context) -> ChangeResult {
        let key = format!("bump-{}", uuid::Uuid::new_v4().simple());
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key.clone());
        H::bump(ctx, &key).await
    }
}

/// Runner A's Redis lease vanishes while A is inside its change; runner B
/// takes the lock and applies the change. A, resumed before its refresher
/// can notice, tries to commit: the audit store's fence rejects the commit
/// (shared transaction: fence check, APPLIED entry and effect in one
/// transaction), and the change's effect exists exactly once.
///
/// `sut` must open the Redis lock of `redis` for the namespace.
pub async fn expired_lease_cannot_commit<H: PipelineUnderTest>(sut: &H, redis: &Redis) {
    let ns = namespace("expire");
    let env = sut.open(&ns).await.expect("open");
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
        expired_lease_check(sut, redis, &ns, &env),
    ))
    .await;
    if let Err(e) = sut.cleanup(&ns).await {
        eprintln!("cleanup of {ns} failed: {e}");
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn expired_lease_check<H: PipelineUnderTest>(
    sut: &H,
    redis: &Redis,
    ns: &str,
    env: &PipelineEnv<H::Target>,
) {
    let shared = env
        .shared
        .clone()
        .expect("a target sharing the audit store's transactions");
    // A long lease: A's refresher must not notice the loss before A
    // commits, so that only the fence stands between A and a second effect.
    let cfg = LockConfig::default()
        .lease(Duration::from_secs(30))
        .retry_interval(Duration::from_millis(50))
        .acquire_timeout(Duration::from_secs(10));
    let keys: Arc<Mutex<Vec<String>>> = Arc::default();
    let runner = |fault: Option<Arc<Fault>>| {
        let (store, shared, keys) = (env.store.clone(), shared.clone(), keys.clone());
        async move {
            let mut b = Flamingock::builder()
                .service("expiry-test")
                .audit_store(store)
                .lock_provider(redis.lock(ns).await.expect("connect"))
                .target(shared)
                .stage(Stage::new("s").change(Bump::<H> {
                    keys,
                    _h: PhantomData,
                }))
                .lock_config(cfg);
            if let Some(f) = fault {
                b = b.fault_injector(f as Arc<dyn FaultInjector>);
            }
            b.build().expect("build")
        }
    };

    let fault = Fault::new(FaultPoint::BeforeCommit, "bump", FaultAction::Pause);
    let a = runner(Some(fault.clone())).await;
    let a_run = tokio::spawn(async move { a.run().await });
    fault.reached().await;

    let probe = redis.lock(ns).await.expect("connect");
    let _a_holds = probe
        .inspect()
        .await
        .expect("inspect")
        .expect("A holds the lock");
    redis.expire_lease(ns).await.expect("expire A's lease");
    assert!(probe.inspect().await.expect("inspect").is_none());

    let b = runner(None).await.run().await.expect("runner B");
    assert_eq!(b.applied(), ["bump"]);
    let b_epoch = b
        .fencing_token
        .expect("B took the lock and claimed an epoch");
    assert_eq!(env.store.fence().await.expect("fence"), b_epoch);

    fault.resume();
    match a_run.await.expect("join A") {
        Err(Error::LeaseLost { detail, .. }) => assert!(
            detail.contains(&format!("write of epoch {} rejected", b_epoch - 1)),
            "A must be stopped by the fence: {detail}"
        ),
        other => panic!("A must stop with LeaseLost, got {other:?}"),
    }

    let keys = keys.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(keys.len(), 2, "A and B both applied the change: {keys:?}");
    let mut committed = Vec::new();
    for key in &keys {
        committed.push(sut.count(&shared, key).await.expect("count"));
    }
    assert_eq!(
        committed,
        [0, 1],
        "A's application rolled back, B's committed"
    );
    let applied: Vec<u64> = env
        .store
        .history(&HistoryFilter::all().change("bump"))
        .await
        .expect("history")
        .into_iter()
        .filter(|e| e.state == AuditState::Applied)
        .map(|e| e.fencing_token)
        .collect();
    assert_eq!(applied, [b_epoch], "one APPLIED entry, B's");

    // Nothing pending now: a third runner takes the fast path.
    let c = runner(None).await.run().await.expect("runner C");
    assert!(!c.took_lock);
    assert_eq!(c.totals().skipped, 1);
}
