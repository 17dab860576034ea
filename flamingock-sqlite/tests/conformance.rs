//! Every conformance suite against SQLite files. No server is needed: each
//! namespace is a fresh database file in a temporary directory, and the
//! separate-transaction targets live in a second file beside it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flamingock_core::fault::{FaultInjector, FaultPoint};
use flamingock_core::{
    async_trait, AuditState, AuditStore, Change, ChangeMeta, ChangeResult, Error, Flamingock,
    HistoryFilter, LockConfig, LockProvider, Stage, TargetSystem,
};
use flamingock_sqlite::{sqlx, SqliteAuditStore, SqliteContext, SqliteLock, SqliteTarget};
use flamingock_test_support::audit_suite::AuditStoreUnderTest;
use flamingock_test_support::faults::{Fault, FaultAction};
use flamingock_test_support::lock_suite::LockUnderTest;
use flamingock_test_support::pipeline_suite::{PipelineEnv, PipelineUnderTest};
use flamingock_test_support::BoxError;
use futures::future::BoxFuture;

/// SQLite files in a temporary directory removed when the test ends.
struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn main_file(&self, ns: &str) -> PathBuf {
        self.dir.path().join(format!("{ns}.db"))
    }
    fn other_file(&self, ns: &str) -> PathBuf {
        self.dir.path().join(format!("{ns}-elsewhere.db"))
    }
    fn remove(&self, ns: &str) -> Result<(), BoxError> {
        for base in [self.main_file(ns), self.other_file(ns)] {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = base.clone().into_os_string();
                p.push(suffix);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

async fn sqlite() -> Option<Sqlite> {
    Some(Sqlite {
        dir: tempfile::Builder::new()
            .prefix("flamingock-sqlite-")
            .tempdir()
            .expect("temporary directory"),
    })
}

#[async_trait]
impl AuditStoreUnderTest for Sqlite {
    async fn open(&self, ns: &str) -> Result<Arc<dyn AuditStore>, BoxError> {
        Ok(Arc::new(SqliteAuditStore::open(self.main_file(ns)).await?))
    }
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        self.remove(ns)
    }
}

#[async_trait]
impl LockUnderTest for Sqlite {
    async fn open(&self, ns: &str) -> Result<Arc<dyn LockProvider>, BoxError> {
        Ok(Arc::new(SqliteLock::open(self.main_file(ns)).await?))
    }
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        self.remove(ns)
    }
}

const COUNTERS: &str =
    "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL)";

#[async_trait]
impl PipelineUnderTest for Sqlite {
    type Target = SqliteTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<SqliteTarget>, BoxError> {
        let store = SqliteAuditStore::open(self.main_file(ns)).await?;
        let elsewhere = SqliteTarget::open("separate-marker", self.other_file(ns)).await?;
        Ok(PipelineEnv {
            lock: Arc::new(store.lock()),
            shared: Some(store.target("shared")),
            separate: Some(elsewhere.clone().without_marker().with_id("separate")),
            separate_marker: Some(elsewhere),
            store: Arc::new(store),
        })
    }

    fn bump<'a>(ctx: &'a mut SqliteContext, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            sqlx::query(COUNTERS).execute(ctx.conn()).await?;
            sqlx::query(
                "INSERT INTO counters (key, n) VALUES (?1, 1) \
                 ON CONFLICT (key) DO UPDATE SET n = n + 1",
            )
            .bind(key)
            .execute(ctx.conn())
            .await?;
            Ok(())
        })
    }

    async fn count(&self, target: &SqliteTarget, key: &str) -> Result<u64, BoxError> {
        let _ = target.id();
        sqlx::query(COUNTERS).execute(target.pool()).await?;
        let n: Option<i64> = sqlx::query_scalar("SELECT n FROM counters WHERE key = ?1")
            .bind(key)
            .fetch_optional(target.pool())
            .await?;
        Ok(u64::try_from(n.unwrap_or(0))?)
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        self.remove(ns)
    }
}

mod audit {
    use super::sqlite;
    flamingock_test_support::audit_store_tests!(sqlite);
}

mod lock {
    use super::sqlite;
    flamingock_test_support::lock_tests!(sqlite);
}

/// Every pipeline check but `lost_lease_cannot_commit`, through the suite's
/// own expansion macro (the public `pipeline_tests!` expands to exactly this
/// list plus that check).
///
/// `lost_lease_cannot_commit` pauses runner A *inside* its change's
/// transaction (fault point `BeforeCommit`) and expects an operator's
/// `force_release` and a whole runner B to complete meanwhile. SQLite has
/// one writer per database file: A's open transaction holds the file's write
/// lock, so neither the force release nor B can write anything until A ends,
/// and the check waits out the busy timeout and fails. Nothing unsafe can
/// happen in that window (nobody else can commit), and the property the
/// check is after (a runner whose lease was lost cannot commit, because the
/// fence check is inside the change's transaction) is checked by
/// [`lost_lease_cannot_commit_sqlite`] below with A paused just before its
/// transaction begins.
mod pipeline {
    use super::sqlite;
    flamingock_test_support::__suite_tests!(sqlite, pipeline_suite: [
        applies_in_order_then_fast_path,
        exactly_once_concurrent_runners,
        crash_table_shared_tx,
        crash_table_separate_tx_with_marker,
        crash_table_separate_tx,
        crash_table_non_transactional,
        failures_follow_the_decision_table,
        panicking_change_releases_lock,
        blocked_stages_report_every_blocked_change,
        fix_takes_the_lock,
        validate_only_applies_nothing,
        orphan_audit_entries,
        plan_lists_strategies,
    ]);
}

struct Bump(&'static str);

impl Change for Bump {
    type Target = SqliteTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(self.0, "0001")
    }
    async fn apply(&self, ctx: &mut SqliteContext) -> ChangeResult {
        Sqlite::bump(ctx, self.0).await
    }
}

/// A runner whose lease is lost (force-released by an operator, taken by
/// runner B who does the work) while it is about to run a change cannot
/// commit that change: the fence check inside the change's own transaction
/// rejects it, and the effect exists exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_lease_cannot_commit_sqlite() {
    let sut = sqlite().await.expect("sut");
    let ns = flamingock_test_support::namespace("lost");
    let env = PipelineUnderTest::open(&sut, &ns).await.expect("open");
    let shared = env.shared.clone().expect("shared target");
    let cfg = LockConfig::default()
        .lease(Duration::from_millis(1200))
        .retry_interval(Duration::from_millis(50))
        .acquire_timeout(Duration::from_secs(60));
    let runner = |fault: Option<Arc<Fault>>| {
        let mut b = Flamingock::builder()
            .audit_store(env.store.clone())
            .lock_provider(env.lock.clone())
            .target(shared.clone())
            .stage(Stage::new("s").change(Bump("c")))
            .lock_config(cfg);
        if let Some(f) = fault {
            b = b.fault_injector(f as Arc<dyn FaultInjector>);
        }
        b.build().expect("build")
    };
    let fault = Fault::new(FaultPoint::BeforeStart, "c", FaultAction::Pause);
    let a = runner(Some(fault.clone()));
    let a_run = tokio::spawn(async move { a.run().await });
    fault.reached().await;
    env.lock.force_release().await.expect("force release");
    let b = runner(None).run().await.expect("runner B");
    assert_eq!(b.applied(), ["c"]);
    tokio::time::sleep(cfg.refresh_interval() + Duration::from_millis(200)).await;
    fault.resume();
    let a_result = a_run.await.expect("join A");
    assert!(
        matches!(a_result, Err(Error::LeaseLost { .. })),
        "A must stop with LeaseLost, got {a_result:?}"
    );
    assert_eq!(sut.count(&shared, "c").await.expect("count"), 1);
    let applied = env
        .store
        .history(&HistoryFilter::all().change("c"))
        .await
        .expect("history")
        .into_iter()
        .filter(|e| e.state == AuditState::Applied)
        .count();
    assert_eq!(applied, 1, "exactly one APPLIED entry");
    PipelineUnderTest::cleanup(&sut, &ns)
        .await
        .expect("cleanup");
}
