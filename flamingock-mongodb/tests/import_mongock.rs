//! Importing Mongock's change log: entries written as Mongock 5 writes
//! them (`MongoSync4ChangeEntryRepository.toEntity`), read back with
//! `read_mongock`, recorded in this store, and only the rest runs.

use flamingock_core::import::{ImportOptions, Tool};
use flamingock_core::memory::{InMemoryTarget, KvTx};
use flamingock_core::{AuditStore, Change, ChangeMeta, ChangeResult, Flamingock, Stage};
use flamingock_mongodb::mongodb::bson::{doc, DateTime, Document};
use flamingock_mongodb::mongodb::Client;
use flamingock_mongodb::{read_mongock, MongoAuditStore};
use flamingock_test_support::{namespace, require_service, services};

struct Put(&'static str, &'static str);

impl Change for Put {
    type Target = InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(self.0).order(self.1).author("ana")
    }
    async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
        tx.incr(self.0);
        Ok(())
    }
}

/// One change-log entry as Mongock writes it.
fn entry(change_id: &str, state: &str, at_ms: i64, system: bool) -> Document {
    doc! {
        "executionId": format!("2024-01-01T10:00:00-{at_ms}"),
        "changeId": change_id,
        "author": "ana",
        "timestamp": DateTime::from_millis(at_ms),
        "state": state,
        "type": "EXECUTION",
        "changeLogClass": "com.example.ChangeLog",
        "changeSetMethod": change_id,
        "metadata": null,
        "executionMillis": 12_i64,
        "executionHostname": "app-1",
        "errorTrace": null,
        "systemChange": system,
    }
}

#[tokio::test]
async fn mongocks_change_log_is_imported_and_only_the_rest_runs() {
    let url = require_service(&services::MONGODB);
    let client = Client::with_uri_str(&url).await.expect("client");
    let ns = namespace("mgk");
    let db = client.database(&ns);
    assert!(
        read_mongock(&db, None).await.expect("read").is_none(),
        "no change log yet"
    );
    db.collection::<Document>("mongockChangeLog")
        .insert_many([
            entry("system-change-00001", "EXECUTED", 1_000, true),
            entry("create-users", "EXECUTED", 2_000, false),
            entry("seed-users", "EXECUTED", 3_000, false),
            // A later failed attempt leaves it applied, as Mongock reads it.
            entry("seed-users", "FAILED", 3_500, false),
            entry("add-index", "EXECUTED", 4_000, false),
            entry("add-index", "ROLLED_BACK", 5_000, false),
        ])
        .await
        .expect("write the change log");
    let history = read_mongock(&db, None)
        .await
        .expect("read")
        .expect("a change log");
    assert_eq!(history.tool, Tool::Mongock);
    assert_eq!(
        history.rows.len(),
        5,
        "Mongock's own system change left out"
    );

    let store = MongoAuditStore::connect(&flamingock_test_support::services::with_path(
        &url,
        &format!("{ns}_audit"),
    ))
    .await
    .expect("store");
    let target = InMemoryTarget::new("app");
    let runner = Flamingock::builder()
        .audit_store(store.clone())
        .target(target.clone())
        .stage(
            Stage::new("mongo")
                .change(Put("create-users", "001"))
                .change(Put("seed-users", "002"))
                .change(Put("add-index", "003"))
                .change(Put("add-orders", "004")),
        )
        .import_history(history, ImportOptions::new("moved from mongock"))
        .build()
        .expect("build");
    let report = runner.run().await.expect("run");
    assert_eq!(report.applied(), ["add-index", "add-orders"]);
    assert_eq!(target.get("create-users"), None, "never re-run");
    let snapshot = store.snapshot().await.expect("snapshot");
    let mut imported: Vec<&str> = snapshot
        .iter()
        .filter(|e| e.metadata["imported_from"] == "mongock")
        .map(|e| e.change_id.as_str())
        .collect();
    imported.sort_unstable();
    assert_eq!(imported, ["create-users", "seed-users"]);
    let seed = snapshot
        .iter()
        .find(|e| e.change_id == "seed-users")
        .expect("seed-users");
    assert_eq!(seed.metadata["foreign_applied_by"], "ana on app-1");
    let at = seed.metadata["foreign_applied_at"]
        .as_str()
        .unwrap_or_default();
    assert!(
        at.starts_with("1970-01-01T00:00:03"),
        "the EXECUTED entry's: {at}"
    );
    client.database(&ns).drop().await.expect("drop");
    client
        .database(&format!("{ns}_audit"))
        .drop()
        .await
        .expect("drop");
}
