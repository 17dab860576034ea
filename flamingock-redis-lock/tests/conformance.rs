//! The lock suite against a real Redis, the pipeline suite with a Redis lock
//! over in-memory audit stores and targets, and a lease that expires in the
//! middle of a change.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use flamingock_core::fault::{FaultInjector, FaultPoint};
use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
use flamingock_core::{
    async_trait, AuditState, AuditStore, BoxError, Change, ChangeMeta, ChangeResult, Error,
    Flamingock, HistoryFilter, LockConfig, LockProvider, Stage,
};
use flamingock_redis_lock::RedisLock;
use flamingock_test_support::faults::{Fault, FaultAction};
use flamingock_test_support::lock_suite::LockUnderTest;
use flamingock_test_support::pipeline_suite::{
    PipelineCapabilities, PipelineEnv, PipelineUnderTest,
};
use flamingock_test_support::{namespace, require_service, services};
use futures::future::BoxFuture;

/// The local Redis, with every test's keys under a prefix of this process.
#[derive(Debug, Clone)]
struct Redis {
    url: String,
    prefix: String,
}

static PREFIX: LazyLock<String> = LazyLock::new(|| namespace("rlk"));

impl Redis {
    async fn lock(&self, ns: &str) -> Result<RedisLock, BoxError> {
        Ok(RedisLock::builder(ns)
            .key_prefix(self.prefix.as_str())
            .connect(&self.url)
            .await?)
    }

    /// Deletes both keys of `ns` (a plain connection: nothing of the crate's).
    async fn delete_keys(&self, ns: &str) -> Result<(), BoxError> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let tag = format!("{{{}:{ns}}}", self.prefix);
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{tag}:lock"))
            .arg(format!("{tag}:token"))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}

async fn redis() -> Option<Redis> {
    let url = require_service(&services::REDIS)?;
    Some(Redis {
        url,
        prefix: PREFIX.clone(),
    })
}

#[async_trait]
impl LockUnderTest for Redis {
    async fn open(&self, ns: &str) -> Result<Arc<dyn LockProvider>, BoxError> {
        Ok(Arc::new(self.lock(ns).await?))
    }
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        self.delete_keys(ns).await
    }
}

/// In-memory audit store and targets per namespace ("one database"), so
/// that opening a namespace twice gives two handles on the same data.
#[derive(Clone)]
struct Memory {
    store: InMemoryAuditStore,
    elsewhere: InMemoryTarget,
}

static MEMORY: LazyLock<Mutex<HashMap<String, Memory>>> = LazyLock::new(Mutex::default);

fn memory(ns: &str) -> Memory {
    MEMORY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(ns.to_owned())
        .or_insert_with(|| Memory {
            store: InMemoryAuditStore::new(),
            elsewhere: InMemoryTarget::new("elsewhere"),
        })
        .clone()
}

#[async_trait]
impl PipelineUnderTest for Redis {
    type Target = InMemoryTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<InMemoryTarget>, BoxError> {
        let m = memory(ns);
        Ok(PipelineEnv {
            store: Arc::new(m.store.clone()),
            lock: Arc::new(self.lock(ns).await?),
            shared: Some(m.store.target("shared")),
            separate_marker: Some(m.elsewhere.clone().with_id("separate-marker")),
            separate: Some(m.elsewhere.without_marker().with_id("separate")),
        })
    }

    fn bump<'a>(tx: &'a mut KvTx, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            tx.incr(key);
            Ok(())
        })
    }

    async fn count(&self, target: &InMemoryTarget, key: &str) -> Result<u64, BoxError> {
        Ok(match target.get(key) {
            Some(v) => v.parse()?,
            None => 0,
        })
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        MEMORY.lock().unwrap_or_else(|p| p.into_inner()).remove(ns);
        self.delete_keys(ns).await
    }

    fn capabilities(&self) -> PipelineCapabilities {
        PipelineCapabilities::default()
    }
}

mod lock {
    use super::redis;
    flamingock_test_support::lock_tests!(redis);
}

mod pipeline {
    use super::redis;
    flamingock_test_support::pipeline_tests!(redis);
}

struct Bump;

impl Change for Bump {
    type Target = InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("bump", "0001").author("test")
    }
    async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
        tx.incr("bumps");
        Ok(())
    }
}

/// Runner A's Redis lease vanishes while A is inside its change (the key is
/// deleted, as an expiry or a failover would lose it); runner B takes the
/// lock and applies the change. A, resumed before its refresher notices,
/// tries to commit: the audit store's fence rejects the commit, and the
/// change's effect exists exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_lease_cannot_commit_past_the_fence() {
    let Some(redis) = redis().await else { return };
    let ns = namespace("expire");
    let store = InMemoryAuditStore::new();
    // A long lease: A's refresher must not notice the loss before A commits,
    // so that only the fence stands between A and a second effect.
    let cfg = LockConfig::default()
        .lease(Duration::from_secs(30))
        .retry_interval(Duration::from_millis(50))
        .acquire_timeout(Duration::from_secs(10));
    let runner = |fault: Option<Arc<Fault>>| {
        let store = store.clone();
        let redis = redis.clone();
        let ns = ns.clone();
        async move {
            let mut b = Flamingock::builder()
                .service("expiry-test")
                .audit_store(store.clone())
                .lock_provider(redis.lock(&ns).await.expect("connect"))
                .target(store.target("kv"))
                .stage(Stage::new("s").change(Bump))
                .lock_config(cfg);
            if let Some(f) = fault {
                b = b.fault_injector(f as Arc<dyn FaultInjector>);
            }
            b.build().expect("build")
        }
    };

    let check = async {
        let fault = Fault::new(FaultPoint::BeforeCommit, "bump", FaultAction::Pause);
        let a = runner(Some(fault.clone())).await;
        let a_run = tokio::spawn(async move { a.run().await });
        fault.reached().await;

        let probe = redis.lock(&ns).await.expect("connect");
        let a_lease = probe
            .inspect()
            .await
            .expect("inspect")
            .expect("A holds the lock");
        redis
            .delete_keys_lock_only(&ns)
            .await
            .expect("expire A's lease");
        assert!(probe.inspect().await.expect("inspect").is_none());

        let b = runner(None).await.run().await.expect("runner B");
        assert_eq!(b.applied(), ["bump"]);
        let b_token = b.fencing_token.expect("B took the lock");
        assert!(
            b_token > a_lease.token,
            "B's token {b_token} above A's {}",
            a_lease.token
        );
        assert_eq!(store.fence().await.expect("fence"), b_token);

        fault.resume();
        let a_result = a_run.await.expect("join A");
        match &a_result {
            Err(Error::LeaseLost { detail, .. }) => assert!(
                detail.contains("fence"),
                "A must be stopped by the fence: {detail}"
            ),
            other => panic!("A must stop with LeaseLost, got {other:?}"),
        }

        let kv = store.target("kv");
        assert_eq!(kv.get("bumps").as_deref(), Some("1"), "exactly one effect");
        let history = store
            .history(&HistoryFilter::all().change("bump"))
            .await
            .expect("history");
        let applied: Vec<u64> = history
            .iter()
            .filter(|e| e.state == AuditState::Applied)
            .map(|e| e.fencing_token)
            .collect();
        assert_eq!(applied, [b_token], "one APPLIED entry, B's");

        // Nothing pending now: a third runner takes the fast path.
        let c = runner(None).await.run().await.expect("runner C");
        assert!(!c.took_lock);
        assert_eq!(c.totals().skipped, 1);
    };
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(check)).await;
    redis.delete_keys(&ns).await.expect("cleanup");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

impl Redis {
    async fn delete_keys_lock_only(&self, ns: &str) -> Result<(), BoxError> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let deleted: i64 = redis::cmd("DEL")
            .arg(format!("{{{}:{ns}}}:lock", self.prefix))
            .query_async(&mut conn)
            .await?;
        if deleted != 1 {
            return Err(format!("expected to delete 1 lock key, deleted {deleted}").into());
        }
        Ok(())
    }
}
