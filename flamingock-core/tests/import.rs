//! Importing another tool's history: what it applied is recorded here as
//! applied, only the rest runs, and whatever does not fit is listed before
//! anything is written.

use flamingock_core::error::ErrorChain as _;
use flamingock_core::import::{
    ForeignHistory, ForeignKey, ForeignRow, ForeignState, ImportMismatch, ImportOptions, Tool,
};
use flamingock_core::memory::{InMemoryAuditStore, KvTx};
use flamingock_core::{
    AuditEntry, AuditState, AuditStore, Change, ChangeMeta, ChangeResult, Error, Flamingock,
    HistoryFilter, Stage, TxStrategy,
};

struct Put {
    id: &'static str,
    order: &'static str,
}

impl Change for Put {
    type Target = flamingock_core::memory::InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(self.id).order(self.order)
    }
    async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
        tx.incr(self.id);
        Ok(())
    }
}

/// A Flyway-like directory: orders padded the way the SQL layouts pad them.
const FILES: &[(&str, &str)] = &[
    ("V1__init", "1.00"),
    ("V1.1__users", "1.01"),
    ("V1.10__orders", "1.10"),
    ("V2__index", "2.00"),
];

fn builder(store: &InMemoryAuditStore) -> flamingock_core::FlamingockBuilder {
    let mut stage = Stage::new("sql");
    for (id, order) in FILES {
        stage.add(Put { id, order });
    }
    Flamingock::builder()
        .audit_store(store.clone())
        .target(store.shared_target("db"))
        .metadata(serde_json::json!({ "operator": "ops" }))
        .stage(stage)
}

fn row(version: &str, state: ForeignState) -> ForeignRow {
    ForeignRow::new(ForeignKey::Version(version.into()), state)
}

fn flyway(rows: Vec<ForeignRow>) -> ForeignHistory {
    ForeignHistory::new(Tool::Flyway, "public.flyway_schema_history", rows)
}

#[tokio::test]
async fn what_the_tool_applied_is_recorded_once_and_only_the_rest_runs() {
    let store = InMemoryAuditStore::new();
    let r = builder(&store).build().expect("build");
    let history = flyway(vec![
        row("1", ForeignState::Applied)
            .with_description(Some("init".into()))
            .with_applied_at(Some("2024-01-01 10:00:00".into()))
            .with_applied_by(Some("deploy".into()))
            .with_checksum(Some("-123".into())),
        row("1.1", ForeignState::Applied),
        row("1.10", ForeignState::Applied),
    ]);
    let opts = ImportOptions::new("moving from flyway")
        .file_checksums([("V1__init", "-123"), ("V1.1__users", "77")]);
    let preview = r.import_preview(&history, &opts).await.expect("preview");
    assert_eq!(preview.imported.len(), 3);
    assert!(
        store.snapshot().await.expect("snapshot").is_empty(),
        "a preview writes nothing"
    );
    let report = r.import_history(&history, &opts).await.expect("import");
    let ids: Vec<&str> = report
        .imported
        .iter()
        .map(|e| e.change_id.as_str())
        .collect();
    assert_eq!(ids, ["V1__init", "V1.1__users", "V1.10__orders"]);
    assert_eq!(report.not_applied, ["V2__index"]);
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    let first = &report.imported[0];
    assert_eq!(first.state, AuditState::ManualMarkedAsApplied);
    assert!(first.fencing_token > 0, "written under a claimed fence");
    let m = &first.metadata;
    assert_eq!(m["imported_from"], "flyway");
    assert_eq!(m["imported_table"], "public.flyway_schema_history");
    assert_eq!(m["foreign_version"], "1");
    assert_eq!(m["foreign_description"], "init");
    assert_eq!(m["foreign_applied_at"], "2024-01-01 10:00:00");
    assert_eq!(m["foreign_applied_by"], "deploy");
    assert_eq!(m["foreign_checksum"], "-123");
    assert_eq!(m["checksum_matches"], true);
    assert_eq!(m["reason"], "moving from flyway");
    assert_eq!(m["operator"], "ops");
    // The tool kept no checksum for 1.1: nothing is claimed about it.
    assert!(report.imported[1]
        .metadata
        .get("checksum_matches")
        .is_none());

    let run = r.run().await.expect("run");
    assert_eq!(run.applied(), ["V2__index"]);
    assert_eq!(
        store.shared_target("db").get("V1__init"),
        None,
        "never re-run"
    );

    // Again: nothing left to record, nothing written, no lock taken.
    let before = store.history(&HistoryFilter::all()).await.expect("h").len();
    let again = r.import_history(&history, &opts).await.expect("again");
    assert!(again.imported.is_empty());
    assert_eq!(again.already.len(), 3);
    assert!(again.not_applied.is_empty(), "{:?}", again.not_applied);
    let after = store.history(&HistoryFilter::all()).await.expect("h").len();
    assert_eq!(before, after);
}

#[tokio::test]
async fn anything_that_does_not_fit_refuses_the_import_with_the_list() {
    let store = InMemoryAuditStore::new();
    let r = builder(&store).build().expect("build");
    let history = flyway(vec![
        row("1", ForeignState::Applied).with_checksum(Some("111".into())),
        row("1.1", ForeignState::Applied),
        row("1.5", ForeignState::Applied).with_description(Some("dropped file".into())),
        row("1.10", ForeignState::Failed),
    ]);
    let opts = ImportOptions::new("x").file_checksums([("V1__init", "222")]);
    let e = r
        .import_history(&history, &opts)
        .await
        .expect_err("refused");
    let text = e.chain().to_string();
    assert!(matches!(e, Error::ImportRefused { .. }), "{e:?}");
    for needle in [
        "3 row(s)",
        "version 1.5 (dropped file): applied by the tool, but no change here matches it",
        "version 1.10 (change V1.10__orders): the tool's last attempt failed",
        "change V1__init: the file changed after the tool applied it (the tool recorded checksum 111, the file has 222)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(store.snapshot().await.expect("snapshot").is_empty());

    // Accepted: what matches is recorded (the drifted file with both
    // checksums), the failed row and the missing file are left.
    let report = r
        .import_history(&history, &opts.clone().accept_mismatches(true))
        .await
        .expect("accepted");
    let ids: Vec<&str> = report
        .imported
        .iter()
        .map(|e| e.change_id.as_str())
        .collect();
    assert_eq!(ids, ["V1__init", "V1.1__users"]);
    assert_eq!(report.imported[0].metadata["checksum_matches"], false);
    assert_eq!(report.mismatches.len(), 3);
    assert_eq!(report.not_applied, ["V1.10__orders", "V2__index"]);
}

#[tokio::test]
async fn later_rows_win_and_a_flyway_baseline_covers_what_precedes_it() {
    let store = InMemoryAuditStore::new();
    let r = builder(&store).build().expect("build");
    let history = flyway(vec![
        row("1.1", ForeignState::Baseline).with_description(Some("<< Flyway Baseline >>".into())),
        row("1.10", ForeignState::Applied),
        row("1.10", ForeignState::Undone),
        row("2", ForeignState::Failed),
        row("2", ForeignState::Applied),
    ]);
    let report = r
        .import_history(&history, &ImportOptions::new("x"))
        .await
        .expect("import");
    let ids: Vec<&str> = report
        .imported
        .iter()
        .map(|e| e.change_id.as_str())
        .collect();
    assert_eq!(ids, ["V1__init", "V1.1__users", "V2__index"]);
    assert_eq!(report.imported[0].metadata["foreign_baseline"], true);
    assert_eq!(report.not_applied, ["V1.10__orders"], "undone by the tool");
}

#[tokio::test]
async fn a_change_recorded_here_as_not_in_place_is_a_mismatch_and_never_overwritten() {
    let store = InMemoryAuditStore::new();
    store.prepare().await.expect("prepare");
    let e = AuditEntry::new("V1__init", AuditState::ManualMarkedAsRolledBack, 1)
        .strategy(TxStrategy::Manual);
    store.append(&e).await.expect("seed");
    let r = builder(&store).build().expect("build");
    let history = flyway(vec![row("1", ForeignState::Applied)]);
    let e = r
        .import_history(&history, &ImportOptions::new("x"))
        .await
        .expect_err("refused");
    assert!(
        e.chain()
            .to_string()
            .contains("change V1__init: recorded here as MANUAL_MARKED_AS_ROLLED_BACK"),
        "{e}"
    );
    let report = r
        .import_history(&history, &ImportOptions::new("x").accept_mismatches(true))
        .await
        .expect("accepted");
    assert!(report.imported.is_empty());
    assert!(matches!(
        report.mismatches[0],
        ImportMismatch::Recorded { .. }
    ));
}

#[tokio::test]
async fn mongock_change_ids_match_code_changes_and_the_builder_imports_before_a_run() {
    let store = InMemoryAuditStore::new();
    let history = ForeignHistory::new(
        Tool::Mongock,
        "mongockChangeLog",
        vec![
            ForeignRow::new(
                ForeignKey::ChangeId("V1__init".into()),
                ForeignState::Applied,
            )
            .with_applied_by(Some("mongock-host".into())),
            ForeignRow::new(
                ForeignKey::ChangeId("V1.1__users".into()),
                ForeignState::Applied,
            ),
        ],
    );
    let r = builder(&store)
        .import_history(history, ImportOptions::new("moved from mongock"))
        .build()
        .expect("build");
    let run = r.run().await.expect("run");
    assert_eq!(run.applied(), ["V1.10__orders", "V2__index"]);
    let snapshot = store.snapshot().await.expect("snapshot");
    let imported = snapshot
        .iter()
        .filter(|e| e.metadata.get("imported_from").is_some())
        .count();
    assert_eq!(imported, 2);
    // The next start: nothing to import, nothing to run.
    assert!(r.run().await.expect("again").applied().is_empty());
}
