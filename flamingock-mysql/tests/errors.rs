//! MySQL's own bad input on a real server: a missing database, invalid
//! names, malformed history columns. The checks every backend shares
//! (malformed states, missing and misshapen tables, fence rejections inside
//! a change's transaction, connections killed mid-run, wrong credentials)
//! are the bad-input suite's, run from `tests/conformance.rs`.

use flamingock_core::error::ErrorChain as _;
mod common;

use flamingock_core::{AuditEntry, AuditState, AuditStore, HistoryFilter, TargetError};
use flamingock_mysql::{quote_ident, MysqlAuditStore, MysqlLock, MysqlTarget};
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
async fn missing_database_is_a_clear_connect_error() {
    let url = common::url().expect("MySQL");
    let missing = namespace("nodb");
    let err = MysqlAuditStore::connect(&with(&url, "root", &missing))
        .await
        .expect_err("no such database");
    let text = err.chain().to_string();
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
    assert!(err.chain().to_string().contains("no database"), "{err}");
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
        assert!(
            err.chain().to_string().contains("invalid configuration"),
            "{err}"
        );
        assert!(
            matches!(err, flamingock_core::StoreError::InvalidConfig { .. }),
            "{err:?}"
        );
        assert!(matches!(
            MysqlLock::builder(db.pool(1)).prefix(prefix).build().await,
            Err(flamingock_core::LockError::InvalidConfig { .. })
        ));
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
    assert!(
        err.chain().to_string().contains("not a plain identifier"),
        "{err}"
    );
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

/// Malformed history columns are named with the change, and the other rows
/// still read (a malformed state is the bad-input suite's
/// `malformed_entries_are_named_not_misread`).
#[tokio::test]
async fn malformed_history_columns_are_errors_naming_column_and_change() {
    let db = Db::new("badrow").await;
    let store = db.store().await;
    store.prepare().await.expect("prepare");
    for id in ["good", "bad-duration", "fine"] {
        store
            .append(&AuditEntry::new(id, AuditState::Applied, 0))
            .await
            .expect("append");
    }
    db.exec("UPDATE {db}.flamingock_audit_history SET duration_ms = -5 WHERE change_id = 'bad-duration'")
        .await;
    db.exec("UPDATE {db}.flamingock_audit_history SET tx_strategy = 'TELEPATHY' WHERE change_id = 'good'")
        .await;
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
        .history(&HistoryFilter::all().change("fine"))
        .await
        .expect("a good row");
    assert_eq!(rows.len(), 1);
    db.drop().await;
}
