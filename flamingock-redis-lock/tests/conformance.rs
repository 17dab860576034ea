//! The lock suite against a real Redis, the pipeline suite with a Redis lock
//! over in-memory audit stores and targets, and a lease that expires in the
//! middle of a change.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use common::Redis;
use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
use flamingock_core::{async_trait, BoxError, LockProvider};
use flamingock_test_support::lock_suite::LockUnderTest;
use flamingock_test_support::pipeline_suite::{
    PipelineCapabilities, PipelineEnv, PipelineUnderTest,
};
use futures::future::BoxFuture;

async fn redis() -> Option<Redis> {
    common::redis()
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

/// A runner whose Redis lease vanished mid-change cannot commit past the
/// in-memory store's fence; the next runner does the work exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_lease_cannot_commit_past_the_fence() {
    let Some(redis) = redis().await else { return };
    common::expired_lease_cannot_commit(&redis, &redis).await;
}
