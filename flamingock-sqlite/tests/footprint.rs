//! What the store adds to the user's database: its own tables, nothing else.

use flamingock_core::{AuditEntry, AuditState, AuditStore, LockProvider};
use flamingock_sqlite::{sqlx, SqliteAuditStore};

#[tokio::test]
async fn only_the_stores_own_tables_are_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteAuditStore::connect(dir.path().join("app.db"))
        .await
        .expect("open");
    store.prepare().await.expect("prepare");
    store.lock().inspect().await.expect("lock table");
    for i in 0..3 {
        store
            .append(&AuditEntry::new(format!("c{i}"), AuditState::Applied, 0))
            .await
            .expect("append");
    }
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(store.pool())
            .await
            .expect("catalog");
    assert!(
        !tables.iter().any(|t| t == "sqlite_sequence"),
        "AUTOINCREMENT leaks sqlite_sequence into the user's database: {tables:?}"
    );
    assert!(
        tables.iter().all(|t| t.starts_with("flamingock_")),
        "{tables:?}"
    );
    // The history keeps its order by the explicit id column.
    let history = store
        .history(&flamingock_core::HistoryFilter::all())
        .await
        .expect("history");
    let ids: Vec<&str> = history.iter().map(|e| e.change_id.as_str()).collect();
    assert_eq!(ids, ["c0", "c1", "c2"]);
}
