//! SQLite's own bad input: what the user gets for a directory, a read-only
//! file, a lock table of the wrong shape, a corrupted file and malformed rows
//! (the checks every backend shares are the bad-input suite's, in
//! `tests/conformance.rs`).
//! Every error must say what is wrong and name the file (or table and key).

use flamingock_core::error::ErrorChain as _;
use std::path::Path;
use std::time::Duration;

use flamingock_core::{
    Acquire, AuditEntry, AuditState, AuditStore, Change, ChangeMeta, ChangeResult, Flamingock,
    LockError, LockProvider, Stage, StoreError, TargetSystem,
};
use flamingock_sqlite::{sqlx, SqliteAuditStore, SqliteContext, SqliteLock, SqliteTarget};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("flamingock-sqlite-err-")
        .tempdir()
        .expect("temp dir")
}

fn shown(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_owned())
        .display()
        .to_string()
}

#[tokio::test]
async fn a_directory_is_not_a_database_file() {
    let dir = tempdir();
    let err = SqliteAuditStore::connect(dir.path())
        .await
        .expect_err("a directory must be refused");
    let text = format!("{err}: {}", source_text(&err));
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    assert!(text.contains(&shown(dir.path())), "names the path: {text}");
    assert!(text.contains("directory"), "says why: {text}");
}

#[tokio::test]
async fn a_corrupted_file_is_refused_at_open_naming_it() {
    let dir = tempdir();
    let path = dir.path().join("corrupt.db");
    std::fs::write(
        &path,
        "this is certainly not a SQLite database\n".repeat(200),
    )
    .expect("write");
    let err = SqliteAuditStore::connect(&path)
        .await
        .expect_err("must be refused");
    let text = format!("{err}: {}", source_text(&err));
    assert!(text.contains(&shown(&path)), "names the file: {text}");
    assert!(text.contains("not a database"), "says why: {text}");
    // The same for the lock and the target.
    let lock_err = SqliteLock::builder(&path)
        .build()
        .await
        .expect_err("lock refused");
    assert!(
        lock_err.chain().to_string().contains("corrupt.db"),
        "{lock_err}"
    );
    let target_err = SqliteTarget::builder("t", &path)
        .build()
        .await
        .expect_err("target refused");
    assert!(
        target_err.chain().to_string().contains("corrupt.db"),
        "{target_err}"
    );
    // Nothing was written over the user's file.
    assert!(std::fs::read_to_string(&path)
        .expect("read")
        .starts_with("this is certainly"));
}

#[tokio::test]
async fn a_read_only_database_fails_writes_naming_the_file() {
    let dir = tempdir();
    let path = dir.path().join("ro.db");
    {
        let store = SqliteAuditStore::connect(&path).await.expect("open");
        store.prepare().await.expect("prepare");
        store.pool().close().await;
    }
    let mut perms = std::fs::metadata(&path).expect("metadata").permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&path, perms).expect("chmod");
    // Root ignores file permissions: then ask SQLite for a read-only
    // connection, which is what a read-only file gives everyone else.
    let enforced = std::fs::OpenOptions::new().write(true).open(&path).is_err();
    let location = if enforced {
        path.display().to_string()
    } else {
        format!("sqlite://{}?mode=ro", path.display())
    };
    let store = SqliteAuditStore::connect(&location)
        .await
        .expect("open read-only");
    store.prepare().await.expect("reading the schema works");
    assert!(store.snapshot().await.expect("reads work").is_empty());
    let err = store
        .append(&AuditEntry::new("c", AuditState::Applied, 1))
        .await
        .expect_err("a write must fail");
    let text = format!("{err}: {}", source_text(&err));
    assert!(text.contains("ro.db"), "names the file: {text}");
    assert!(text.contains("readonly"), "says why: {text}");
    let err = store.lock().try_acquire("me", Duration::from_secs(5)).await;
    let text = format!("{err:?}");
    assert!(
        text.contains("ro.db") && text.contains("readonly"),
        "lock on a read-only file: {text}"
    );
}

/// A lock table of another shape is reported (an audit table of another
/// shape is the bad-input suite's `misshapen_tables_are_reported_not_used`).
#[tokio::test]
async fn a_lock_table_of_the_wrong_shape_is_reported_not_used() {
    let dir = tempdir();
    let path = dir.path().join("shape.db");
    let store = SqliteAuditStore::connect(&path).await.expect("open");
    sqlx::query("CREATE TABLE flamingock_lock (id INTEGER PRIMARY KEY, holder TEXT)")
        .execute(store.pool())
        .await
        .expect("create a foreign lock table");
    match store.lock().inspect().await {
        Err(LockError::Malformed { detail, .. }) => {
            assert!(
                detail.contains("flamingock_lock") && detail.contains("owner"),
                "{detail}"
            )
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_rows_are_reported_with_table_and_key() {
    let dir = tempdir();
    let store = SqliteAuditStore::connect(dir.path().join("rows.db"))
        .await
        .expect("open");
    store.prepare().await.expect("prepare");
    store
        .append(&AuditEntry::new("good", AuditState::Applied, 0))
        .await
        .expect("append");
    store
        .append(&AuditEntry::new("bad", AuditState::Applied, 0))
        .await
        .expect("append");
    sqlx::query("UPDATE flamingock_audit SET state = 'HALF_DONE' WHERE change_id = 'bad'")
        .execute(store.pool())
        .await
        .expect("corrupt a row");
    match store.snapshot().await {
        Err(StoreError::Malformed { what, detail, .. }) => {
            assert!(
                what.contains("flamingock_audit") && what.contains("'bad'"),
                "{what}"
            );
            assert!(detail.contains("HALF_DONE"), "{detail}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    // Appending to that change refuses to guess what its current state is.
    assert!(matches!(
        store
            .append(&AuditEntry::new("bad", AuditState::Failed, 0))
            .await,
        Err(StoreError::Malformed { .. })
    ));
    sqlx::query("UPDATE flamingock_audit SET state = 'APPLIED', metadata = '{not json' WHERE change_id = 'bad'")
        .execute(store.pool())
        .await
        .expect("corrupt metadata");
    assert!(
        matches!(store.snapshot().await, Err(StoreError::Malformed { detail, .. }) if detail.contains("metadata"))
    );
    sqlx::query("UPDATE flamingock_audit SET metadata = 'null', fencing_token = 'abc' WHERE change_id = 'bad'")
        .execute(store.pool())
        .await
        .expect("corrupt a number");
    assert!(
        matches!(store.snapshot().await, Err(StoreError::Malformed { detail, .. }) if detail.contains("fencing_token"))
    );
    sqlx::query("UPDATE flamingock_fence SET token = -4")
        .execute(store.pool())
        .await
        .expect("corrupt the fence");
    assert!(
        matches!(store.fence().await, Err(StoreError::Malformed { what, .. }) if what.contains("flamingock_fence"))
    );

    // A lock row of the wrong shape.
    let lock = store.lock();
    let Acquire::Acquired(lease) = lock
        .try_acquire("setup", Duration::from_secs(5))
        .await
        .expect("creates the lock table")
    else {
        panic!("the lock is free")
    };
    lock.release("setup", lease.token).await.expect("release");
    sqlx::query("INSERT OR REPLACE INTO flamingock_lock (id, owner, token, expires_at_ms, counter) VALUES (1, 'x', NULL, NULL, 3)")
        .execute(store.pool())
        .await
        .expect("corrupt the lock");
    match lock.try_acquire("me", Duration::from_secs(5)).await {
        Err(LockError::Malformed { detail, lock }) => {
            assert!(detail.contains("owner"), "{detail}");
            assert!(lock.contains("rows.db"), "{lock}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn store_ids_identify_file_and_prefix() {
    let dir = tempdir();
    let path = dir.path().join("id.db");
    let a = SqliteAuditStore::connect(&path).await.expect("open");
    let same = SqliteAuditStore::connect(dir.path().join(".").join("id.db"))
        .await
        .expect("open again");
    let other_prefix = SqliteAuditStore::builder(&path)
        .prefix("other")
        .build()
        .await
        .expect("open with prefix");
    assert_eq!(a.store_id(), same.store_id());
    assert_ne!(a.store_id(), other_prefix.store_id());
    assert!(a.store_id().contains(&shown(&path)), "{}", a.store_id());
    assert_eq!(
        a.shared_target("db")
            .build()
            .await
            .expect("target")
            .capabilities()
            .shared_audit_store
            .as_deref(),
        Some(a.store_id())
    );
    let m1 = SqliteAuditStore::connect("sqlite::memory:")
        .await
        .expect("memory");
    let m2 = SqliteAuditStore::connect("sqlite::memory:")
        .await
        .expect("memory");
    assert_ne!(m1.store_id(), m2.store_id(), "two in-memory databases");
}

struct CreateT;
impl Change for CreateT {
    type Target = SqliteTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("create-t").order("0001")
    }
    async fn apply(&self, db: &mut SqliteContext) -> ChangeResult {
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(db.conn())
            .await?;
        Ok(())
    }
}

struct Broken;
impl Change for Broken {
    type Target = SqliteTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("broken").order("0002")
    }
    async fn apply(&self, db: &mut SqliteContext) -> ChangeResult {
        sqlx::query("INSERT INTO t (x) VALUES (1)")
            .execute(db.conn())
            .await?;
        sqlx::query("INSERT INTO no_such_table VALUES (1)")
            .execute(db.conn())
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn in_memory_store_runs_a_pipeline_and_rolls_back_failures() {
    let store = SqliteAuditStore::connect("sqlite::memory:")
        .await
        .expect("memory");
    let runner = Flamingock::builder()
        .audit_store(store.clone())
        .target(
            store
                .shared_target("db")
                .build()
                .await
                .expect("shared target"),
        )
        .stage(Stage::new("s").change(CreateT).change(Broken))
        .build()
        .expect("build");
    let err = runner.run().await.expect_err("broken fails");
    assert!(err.chain().to_string().contains("no_such_table"), "{err}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(store.pool())
        .await
        .expect("t exists: create-t committed");
    assert_eq!(n, 0, "the failed change's insert was rolled back");
    let snap = store.snapshot().await.expect("snapshot");
    let states: Vec<_> = snap
        .iter()
        .map(|e| (e.change_id.as_str(), e.state))
        .collect();
    assert_eq!(
        states,
        [
            ("broken", AuditState::RolledBack),
            ("create-t", AuditState::Applied)
        ]
    );
}

fn source_text(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}
