//! The lock suite against a real Redis, the pipeline suite with a Redis lock
//! over in-memory audit stores and targets, and a lease that expires in the
//! middle of a change.
// The nested futures of the suites' pipelines need more than the default
// depth to lay out (rustc's query depth, not runtime recursion).
#![recursion_limit = "256"]

mod common;

use std::sync::Arc;

use common::Redis;
use flamingock_core::memory::{InMemoryTarget, KvTx};
use flamingock_core::{async_trait, BoxError, LockProvider};
use flamingock_test_support::lock_suite::LockUnderTest;
use flamingock_test_support::memory;
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

#[async_trait]
impl PipelineUnderTest for Redis {
    type Target = InMemoryTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<InMemoryTarget>, BoxError> {
        Ok(memory::env_with_lock(ns, Arc::new(self.lock(ns).await?)))
    }

    fn bump<'a>(tx: &'a mut KvTx, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        <memory::Memory as PipelineUnderTest>::bump(tx, key)
    }

    async fn count(&self, target: &InMemoryTarget, key: &str) -> Result<u64, BoxError> {
        memory::Memory.count(target, key).await
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        memory::drop_namespace(ns);
        self.delete_keys(ns).await
    }

    async fn footprint(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        let mut found = memory::Memory.footprint(ns).await?;
        found.extend(self.keys_of(ns).await?);
        Ok(found)
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
