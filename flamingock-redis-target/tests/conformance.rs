//! The pipeline suite with the Redis target (`FLAMINGOCK_TEST_REDIS_URL`):
//! separate transactions (MULTI/EXEC) with and without a marker, over a
//! SQLite audit store in a temporary directory. Every key lives under the
//! namespace and is deleted by `cleanup`.
// The nested futures of the suites' pipelines need more than the default
// depth to lay out (rustc's query depth, not runtime recursion).
#![recursion_limit = "256"]

use std::path::PathBuf;
use std::sync::Arc;

use flamingock_core::BoxError;
use flamingock_redis_target::redis::AsyncCommands;
use flamingock_redis_target::{RedisContext, RedisTarget};
use flamingock_sqlite::SqliteAuditStore;
use flamingock_test_support::pipeline_suite::{
    PipelineCapabilities, PipelineEnv, PipelineUnderTest,
};
use futures::future::BoxFuture;

struct RedisSut {
    url: String,
    dir: tempfile::TempDir,
}

impl RedisSut {
    fn file(&self, ns: &str) -> PathBuf {
        self.dir.path().join(format!("{ns}.db"))
    }
    async fn keys(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        let client = flamingock_redis_target::redis::Client::open(self.url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut keys: Vec<String> = conn.keys(format!("{ns}:*")).await?;
        keys.sort();
        Ok(keys)
    }
}

async fn redis() -> Option<RedisSut> {
    Some(RedisSut {
        url: flamingock_test_support::require_service(&flamingock_test_support::services::REDIS),
        dir: tempfile::Builder::new()
            .prefix("flamingock-redis-target-")
            .tempdir()
            .expect("temporary directory"),
    })
}

#[flamingock_core::async_trait]
impl PipelineUnderTest for RedisSut {
    type Target = RedisTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<RedisTarget>, BoxError> {
        let store = SqliteAuditStore::connect(self.file(ns).as_path()).await?;
        let target =
            |id: &str, prefix: String| RedisTarget::builder(id, self.url.clone()).prefix(prefix);
        Ok(PipelineEnv {
            lock: Arc::new(store.lock()),
            shared: None,
            separate_marker: Some(target("separate-marker", format!("{ns}:m")).build().await?),
            separate: Some(
                target("separate", format!("{ns}:s"))
                    .marker(false)
                    .build()
                    .await?,
            ),
            store: Arc::new(store),
        })
    }

    fn bump<'a>(ctx: &'a mut RedisContext, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            let k = format!("{}:counter:{key}", ctx.prefix());
            ctx.incr(k, 1);
            Ok(())
        })
    }

    async fn count(&self, target: &RedisTarget, key: &str) -> Result<u64, BoxError> {
        let mut conn = target.connection().await?;
        let n: Option<i64> = conn
            .get(format!("{}:counter:{key}", target.prefix()))
            .await?;
        Ok(u64::try_from(n.unwrap_or(0))?)
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        let keys = self.keys(ns).await?;
        if !keys.is_empty() {
            let client = flamingock_redis_target::redis::Client::open(self.url.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            conn.del::<_, ()>(keys).await?;
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.file(ns).into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }

    async fn footprint(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        let mut found: Vec<String> = self
            .keys(ns)
            .await?
            .into_iter()
            .filter(|k| !k.contains(":counter:"))
            .collect();
        if self.file(ns).exists() {
            found.push(format!("file {}", self.file(ns).display()));
        }
        Ok(found)
    }

    fn capabilities(&self) -> PipelineCapabilities {
        PipelineCapabilities::default()
            .runners(8)
            .repetitions(10)
            .single_writer()
    }
}

mod pipeline {
    use super::redis;
    flamingock_test_support::pipeline_tests!(redis,
        run: [
            applies_in_order_then_fast_path,
            exactly_once_concurrent_runners,
            crash_table_separate_tx_with_marker,
            crash_table_separate_tx,
            crash_table_non_transactional,
            crash_table_non_transactional_with_check,
            failing_separate_tx_with_marker_rolls_back,
            failing_separate_tx_rolls_back,
            failing_non_transactional_follows_its_rollback,
            failing_non_transactional_resolved_by_check,
            panicking_change_releases_lock,
            lost_lease_cannot_commit,
            blocked_stages_report_every_blocked_change,
            fix_takes_the_lock,
            validate_only_applies_nothing,
            orphan_audit_entries,
            plan_lists_strategies,
            reading_creates_nothing,
        ],
        ignored: [
            crash_table_shared_tx = "not applicable: Redis holds no audit store here, so no target shares its transaction",
            failing_shared_tx_rolls_back = "not applicable: Redis holds no audit store here, so no target shares its transaction",
        ],
    );
}
