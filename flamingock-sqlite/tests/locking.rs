//! SQLite has one writer per file: a change in its shared transaction holds
//! the file's write lock until it commits. Other runners must wait for it
//! like for any held lock, not fail when their busy timeout runs out.

use std::time::Duration;

use flamingock_core::{
    Acquire, AuditStore, Change, ChangeMeta, ChangeResult, Flamingock, LockConfig, LockProvider,
    Stage,
};
use flamingock_sqlite::{sqlx, SqliteAuditStore, SqliteContext, SqliteTarget};
use sqlx::Connection;

const SHORT_BUSY: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_file_reads_as_a_held_lock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("busy.db");
    let store = SqliteAuditStore::builder(&path)
        .busy_timeout(SHORT_BUSY)
        .build()
        .await
        .expect("open");
    let lock = store.lock();
    assert!(lock.inspect().await.expect("inspect").is_none());
    // The file and the lock table exist before another connection takes the
    // file's write lock (looking at the lock creates neither).
    store.prepare().await.expect("prepare");
    let Ok(Acquire::Acquired(setup)) = lock.try_acquire("setup", Duration::from_secs(5)).await
    else {
        panic!("the lock is free")
    };
    lock.release("setup", setup.token).await.expect("release");

    let other = SqliteAuditStore::connect(&path)
        .await
        .expect("second handle");
    let mut writer = other.pool().acquire().await.expect("connection");

    // Nobody holds the lease, but a transaction holds the file.
    let tx = writer.begin_with("BEGIN IMMEDIATE").await.expect("begin");
    match lock.try_acquire("me", Duration::from_secs(30)).await {
        Ok(Acquire::Held(h)) => assert!(h.owner.contains("write lock"), "{h:?}"),
        other => panic!("expected Held, got {other:?}"),
    }
    tx.rollback().await.expect("rollback");

    // A recorded holder is reported as the holder.
    let first = match lock.try_acquire("first", Duration::from_secs(30)).await {
        Ok(Acquire::Acquired(l)) => l.token,
        other => panic!("expected the lock, got {other:?}"),
    };
    let tx = writer.begin_with("BEGIN IMMEDIATE").await.expect("begin");
    match lock.try_acquire("second", Duration::from_secs(30)).await {
        Ok(Acquire::Held(h)) => assert_eq!((h.owner.as_str(), h.token), ("first", first)),
        other => panic!("expected Held by first, got {other:?}"),
    }
    tx.rollback().await.expect("rollback");
    lock.release("first", first).await.expect("release");
}

struct Slow;
impl Change for Slow {
    type Target = SqliteTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("slow").order("0001")
    }
    async fn apply(&self, db: &mut SqliteContext) -> ChangeResult {
        sqlx::query("CREATE TABLE slow (x INTEGER)")
            .execute(db.conn())
            .await?;
        // Much longer than the other runner's busy timeout.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(())
    }
}

async fn runner(store: &SqliteAuditStore) -> Flamingock {
    Flamingock::builder()
        .audit_store(store.clone())
        .target(
            store
                .shared_target("db")
                .build()
                .await
                .expect("shared target"),
        )
        .stage(Stage::new("s").change(Slow))
        .lock_config(
            LockConfig::default()
                .retry_interval(Duration::from_millis(50))
                .acquire_timeout(Duration::from_secs(30)),
        )
        .build()
        .expect("build")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_waits_for_a_long_change_of_another_runner() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("long.db");
    let a = SqliteAuditStore::connect(&path).await.expect("open a");
    let b = SqliteAuditStore::builder(&path)
        .busy_timeout(SHORT_BUSY)
        .build()
        .await
        .expect("open b");
    let (ra, rb) = (runner(&a).await, runner(&b).await);
    let a_run = tokio::spawn(async move { ra.run().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b_report = rb.run().await.expect("b waits, then finds nothing to do");
    let a_report = a_run.await.expect("join").expect("a applies");
    assert_eq!(a_report.applied(), ["slow"]);
    assert_eq!(b_report.totals().skipped, 1, "{b_report}");
    // b found the lock held, waited, and on re-reading the audit saw the
    // work done: it returns without ever taking the lock.
    assert!(
        !b_report.took_lock,
        "b saw the work done while waiting: {b_report}"
    );
}

struct OnOther;
impl Change for OnOther {
    type Target = SqliteTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("on-other").order("0001").target("other")
    }
    async fn apply(&self, db: &mut SqliteContext) -> ChangeResult {
        sqlx::query("CREATE TABLE made_here (x INTEGER)")
            .execute(db.conn())
            .await?;
        Ok(())
    }
}

/// A separate target file whose write lock another connection holds (a
/// runner stopped inside a change on it): the runner that took over waits
/// for it like for a held lock instead of failing the change when one busy
/// timeout runs out, and applies the change once the file is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_separate_target_is_waited_for() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteAuditStore::connect(dir.path().join("audit.db"))
        .await
        .expect("store");
    let other_path = dir.path().join("other.db");
    // The user's own pool, with a busy timeout far below the time the file stays held.
    let other_pool = SqliteAuditStore::builder(&other_path)
        .busy_timeout(SHORT_BUSY)
        .build()
        .await
        .expect("target pool")
        .pool()
        .clone();
    let holder = SqliteAuditStore::connect(&other_path)
        .await
        .expect("holder");
    let mut conn = holder.pool().acquire().await.expect("connection");
    let tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .expect("hold the file");
    let runner = Flamingock::builder()
        .audit_store(store.clone())
        .target(
            SqliteTarget::builder("other", other_pool)
                .build()
                .await
                .expect("target"),
        )
        .stage(Stage::new("s").change(OnOther))
        .lock_config(LockConfig::default().acquire_timeout(Duration::from_secs(30)))
        .build()
        .expect("runner");
    let run = tokio::spawn(async move { runner.run().await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if run.is_finished() {
        panic!("the runner must wait for the busy file: {:?}", run.await);
    }
    tx.rollback().await.expect("release the file");
    let report = run
        .await
        .expect("join")
        .expect("the change applies once the file is free");
    assert_eq!(report.applied(), ["on-other"]);
    let states: Vec<_> = store
        .history(&flamingock_core::HistoryFilter::all())
        .await
        .expect("history")
        .into_iter()
        .map(|e| e.state)
        .collect();
    assert!(
        !states.contains(&flamingock_core::AuditState::Failed),
        "no failure recorded while waiting: {states:?}"
    );
}
