//! Bad input and failures on a real server: wrong credentials, a missing
//! database, missing and wrong-shape tables, malformed rows, invalid names,
//! a fence rejection inside a change's transaction, and connections killed
//! mid-run.

mod common;

use std::time::Duration;

use flamingock_core::{
    AuditEntry, AuditState, AuditStore, Change, ChangeMeta, ChangeResult, CommitWith, ContextMode,
    Flamingock, HistoryFilter, LockConfig, Stage, StoreError, TargetError, TargetSystem,
    TxStrategy,
};
use flamingock_mysql::{quote_ident, MysqlAuditStore, MysqlContext, MysqlLock, MysqlTarget};
use flamingock_test_support::namespace;
use sqlx::{AssertSqlSafe, MySqlPool};

/// A fresh database, dropped by `drop`.
struct Db {
    admin: MySqlPool,
    url: String,
    name: String,
}

impl Db {
    async fn new(prefix: &str) -> Db {
        let url = common::url().expect("MySQL");
        let admin = common::admin(&url);
        let name = namespace(prefix);
        common::create_databases(&admin, &[&name])
            .await
            .expect("create database");
        Db { admin, url, name }
    }
    fn pool(&self, max: u32) -> MySqlPool {
        common::pool(&self.url, &self.name, max)
    }
    async fn store(&self) -> MysqlAuditStore {
        MysqlAuditStore::builder(self.pool(3))
            .build()
            .await
            .expect("build store")
    }
    async fn exec(&self, sql: &str) {
        let sql = sql.replace("{db}", &quote_ident(&self.name));
        sqlx::raw_sql(AssertSqlSafe(sql.clone()))
            .execute(&self.admin)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    async fn count(&self, sql: &str) -> i64 {
        let sql = sql.replace("{db}", &quote_ident(&self.name));
        sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&self.admin)
            .await
            .expect("count")
    }
    async fn drop(self) {
        common::drop_databases(&self.admin, &[&self.name])
            .await
            .expect("drop database");
    }
}

/// The URL with its user, password and database replaced.
fn with(url: &str, userinfo: &str, db: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = host.split_once('/').map_or(host, |(h, _)| h);
    format!("mysql://{userinfo}@{host}/{db}")
}

#[tokio::test]
async fn wrong_credentials_are_a_clear_connect_error_without_the_password() {
    let url = common::url().expect("MySQL");
    let bad = with(&url, "nobody_here:hunter2", "test");
    let err = MysqlAuditStore::connect(&bad).await.expect_err("refused");
    let text = err.to_string();
    assert!(
        matches!(
            err,
            StoreError::Backend {
                operation: "connect",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(text.contains("nobody_here:***@"), "{text}");
    assert!(text.contains("Access denied"), "{text}");
    assert!(!format!("{err:?} {text}").contains("hunter2"), "{text}");
}

#[tokio::test]
async fn missing_database_is_a_clear_connect_error() {
    let url = common::url().expect("MySQL");
    let missing = namespace("nodb");
    let err = MysqlAuditStore::connect(&with(&url, "root", &missing))
        .await
        .expect_err("no such database");
    let text = err.to_string();
    assert!(
        text.contains(&missing) && text.contains("Unknown database"),
        "{text}"
    );
    // A URL without a database: named at build, before any I/O.
    let err = MysqlAuditStore::builder(
        sqlx::MySqlPool::connect_lazy(&with(&url, "root", "")).expect("url"),
    )
    .build()
    .await
    .expect_err("no database");
    assert!(err.to_string().contains("no database"), "{err}");
}

#[tokio::test]
async fn invalid_names_are_rejected_before_any_sql() {
    let db = Db::new("names").await;
    for prefix in ["bad`name", "my prefix", "", &"p".repeat(60)] {
        let err = MysqlAuditStore::builder(db.pool(1))
            .prefix(prefix)
            .build()
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("invalid configuration"), "{err}");
        assert!(MysqlLock::builder(db.pool(1))
            .prefix(prefix)
            .build()
            .await
            .is_err());
        assert!(MysqlTarget::builder("t", db.pool(1))
            .prefix(prefix)
            .build()
            .await
            .is_err());
    }
    let err = MysqlAuditStore::builder(db.pool(1))
        .database("drop table x")
        .build()
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("not a plain identifier"), "{err}");
    // A shared target keeps no marker.
    let store = db.store().await;
    let err = store
        .shared_target("db")
        .marker(true)
        .build()
        .await
        .expect_err("refused");
    assert!(matches!(err, TargetError::Unsupported { .. }), "{err:?}");
    db.drop().await;
}

#[tokio::test]
async fn auto_create_off_names_missing_tables_and_ddl() {
    let db = Db::new("noauto").await;
    let store = MysqlAuditStore::builder(db.pool(2))
        .auto_create(false)
        .build()
        .await
        .expect("build");
    let err = store.prepare().await.expect_err("tables missing");
    let text = err.to_string();
    assert!(matches!(err, StoreError::NotReady { .. }), "{err:?}");
    assert!(
        text.contains(&format!("{}.flamingock_audit_history", db.name)),
        "{text}"
    );
    assert!(text.contains("CREATE TABLE IF NOT EXISTS"), "{text}");
    // The script it gives creates what prepare wants.
    for stmt in store.ddl().split(";\n").filter(|s| !s.trim().is_empty()) {
        sqlx::raw_sql(AssertSqlSafe(stmt.to_owned()))
            .execute(store.pool())
            .await
            .unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
    store.prepare().await.expect("ready after the DDL");
    db.drop().await;
}

#[tokio::test]
async fn wrong_shape_table_is_named_with_its_missing_column() {
    let db = Db::new("shape").await;
    db.exec("CREATE TABLE {db}.flamingock_lock (name VARCHAR(255) PRIMARY KEY, holder TEXT)")
        .await;
    let store = db.store().await;
    let err = store.prepare().await.expect_err("wrong shape");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Malformed { .. }), "{err:?}");
    assert!(text.contains("flamingock_lock"), "{text}");
    assert!(text.contains("column owner"), "{text}");
    assert!(text.contains("column token"), "{text}");
    db.drop().await;
}

#[tokio::test]
async fn malformed_rows_are_errors_naming_table_and_change() {
    let db = Db::new("badrow").await;
    let store = db.store().await;
    store.prepare().await.expect("prepare");
    for id in ["good", "bad-state", "bad-duration", "bad-json"] {
        store
            .append(&AuditEntry::new(id, AuditState::Applied, 0))
            .await
            .expect("append");
    }
    db.exec(
        "UPDATE {db}.flamingock_audit_current SET state = 'EXPLODED' WHERE change_id = 'bad-state'",
    )
    .await;
    db.exec("UPDATE {db}.flamingock_audit_history SET duration_ms = -5 WHERE change_id = 'bad-duration'")
        .await;
    db.exec("UPDATE {db}.flamingock_audit_history SET tx_strategy = 'TELEPATHY' WHERE change_id = 'good'")
        .await;
    let err = store.snapshot().await.expect_err("malformed state");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Malformed { .. }), "{err:?}");
    assert!(text.contains("flamingock_audit_current"), "{text}");
    assert!(
        text.contains("bad-state") && text.contains("EXPLODED"),
        "{text}"
    );
    let text = store
        .history(&HistoryFilter::all().change("bad-duration"))
        .await
        .expect_err("negative duration")
        .to_string();
    assert!(
        text.contains("duration_ms") && text.contains("bad-duration"),
        "{text}"
    );
    let text = store
        .history(&HistoryFilter::all().change("good"))
        .await
        .expect_err("unknown strategy")
        .to_string();
    assert!(text.contains("TELEPATHY"), "{text}");
    // Nothing recorded is lost: the other rows still read.
    let rows = store
        .history(&HistoryFilter::all().change("bad-json"))
        .await
        .expect("a good row");
    assert_eq!(rows.len(), 1);
    db.drop().await;
}

#[tokio::test]
async fn fenced_shared_commit_rolls_the_change_back() {
    let db = Db::new("fenced").await;
    let store = db.store().await;
    store.prepare().await.expect("prepare");
    db.exec("CREATE TABLE {db}.effects (x INT)").await;
    for _ in 0..7 {
        store.claim_fence().await.expect("claim");
    }
    assert_eq!(store.fence().await.expect("fence"), 7);
    let target = store.shared_target("db").build().await.expect("target");
    let insert = format!("INSERT INTO {}.effects VALUES (1)", quote_ident(&db.name));
    let mut ctx = target.begin(ContextMode::Transaction).await.expect("begin");
    sqlx::raw_sql(AssertSqlSafe(insert.clone()))
        .execute(ctx.conn())
        .await
        .expect("insert");
    let entry = AuditEntry::new("c", AuditState::Applied, 6).strategy(TxStrategy::SharedTx);
    match target.commit(ctx, CommitWith::Audit(&entry)).await {
        Err(TargetError::Audit {
            source: StoreError::Fenced {
                token: 6, fence: 7, ..
            },
            ..
        }) => {}
        other => panic!("expected a fence rejection, got {other:?}"),
    }
    assert_eq!(db.count("SELECT COUNT(*) FROM {db}.effects").await, 0);
    assert!(store.snapshot().await.expect("snapshot").is_empty());
    // With a current token, both commit together.
    let mut ctx = target.begin(ContextMode::Transaction).await.expect("begin");
    sqlx::raw_sql(AssertSqlSafe(insert))
        .execute(ctx.conn())
        .await
        .expect("insert");
    let entry = AuditEntry::new("c", AuditState::Applied, 7).strategy(TxStrategy::SharedTx);
    target
        .commit(ctx, CommitWith::Audit(&entry))
        .await
        .expect("commit");
    assert_eq!(db.count("SELECT COUNT(*) FROM {db}.effects").await, 1);
    assert_eq!(store.snapshot().await.expect("snapshot").len(), 1);
    db.drop().await;
}

/// A change that sleeps inside its transaction, then records its effect.
struct Slow {
    id: String,
    db: String,
}

impl Change for Slow {
    type Target = MysqlTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(&self.id).order(&self.id)
    }
    async fn apply(&self, ctx: &mut MysqlContext) -> ChangeResult {
        sqlx::raw_sql("DO SLEEP(0.15)").execute(ctx.conn()).await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {}.effects (id) VALUES (?)",
            quote_ident(&self.db)
        )))
        .bind(&self.id)
        .execute(ctx.conn())
        .await?;
        Ok(())
    }
}

#[tokio::test]
async fn connections_killed_mid_run_lose_nothing() {
    let db = Db::new("killed").await;
    db.exec("CREATE TABLE {db}.effects (id VARCHAR(64) NOT NULL)")
        .await;
    let ids: Vec<String> = (0..12).map(|i| format!("c{i:02}")).collect();
    let runner = |store: MysqlAuditStore, target: MysqlTarget| {
        let mut stage = Stage::new("s");
        for id in &ids {
            stage = stage.change(Slow {
                id: id.clone(),
                db: db.name.clone(),
            });
        }
        Flamingock::builder()
            .audit_store(store)
            .target(target)
            .lock_config(LockConfig::default().lease(Duration::from_secs(2)))
            .stage(stage)
            .build()
            .expect("runner")
    };
    let store = db.store().await;
    let target = store.shared_target("db").build().await.expect("target");
    let first = runner(store, target);
    let killer = async {
        let mut killed = 0;
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
            )
            .bind(&db.name)
            .fetch_all(&db.admin)
            .await
            .expect("processlist");
            for id in ids {
                if sqlx::raw_sql(AssertSqlSafe(format!("KILL CONNECTION {id}")))
                    .execute(&db.admin)
                    .await
                    .is_ok()
                {
                    killed += 1;
                }
            }
        }
        killed
    };
    let (outcome, killed) = tokio::join!(first.run(), killer);
    assert!(killed > 0, "the run's connections were killed");
    // The run may end early (its connection died) or get through: either
    // way, a fresh runner finishes, and every effect exists exactly once.
    let _ = outcome;
    let store = db.store().await;
    let target = store.shared_target("db").build().await.expect("target");
    let second = runner(store.clone(), target);
    let mut finished = false;
    for _ in 0..10 {
        match second.run().await {
            Ok(_) => {
                finished = true;
                break;
            }
            Err(e) => {
                eprintln!("retrying after: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    assert!(finished, "a fresh runner finishes the work");
    for id in &ids {
        let n = db
            .count(&format!(
                "SELECT COUNT(*) FROM {{db}}.effects WHERE id = '{id}'"
            ))
            .await;
        assert_eq!(n, 1, "change {id} applied {n} times");
    }
    let snapshot = store.snapshot().await.expect("snapshot");
    assert_eq!(snapshot.len(), ids.len());
    assert!(snapshot.iter().all(|e| e.state == AuditState::Applied));
    db.drop().await;
}
