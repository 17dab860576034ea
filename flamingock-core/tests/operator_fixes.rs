//! Operator operations that resolve validation problems for good, recorded
//! in the history: retiring an orphan, accepting a new checksum, and
//! recording a change that was applied outside Flamingock.

use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
use flamingock_core::{
    AuditState, Change, ChangeMeta, ChangeResult, Error, Flamingock, HistoryFilter, Stage,
    ValidationProblem,
};

struct Put {
    id: &'static str,
    order: &'static str,
    checksum: &'static str,
}

impl Change for Put {
    type Target = InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(self.id)
            .order(self.order)
            .author("ana")
            .checksum(self.checksum)
    }
    async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
        tx.incr(self.id);
        Ok(())
    }
}

fn put(id: &'static str, order: &'static str, checksum: &'static str) -> Put {
    Put {
        id,
        order,
        checksum,
    }
}

fn runner(store: &InMemoryAuditStore, changes: Vec<Put>) -> Flamingock {
    let mut stage = Stage::new("s");
    for c in changes {
        stage.add(c);
    }
    Flamingock::builder()
        .audit_store(store.clone())
        .target(store.shared_target("db"))
        .metadata(serde_json::json!({ "operator": "ops" }))
        .stage(stage)
        .build()
        .expect("build")
}

#[tokio::test]
async fn a_retired_orphan_no_longer_fails_validation() {
    let store = InMemoryAuditStore::new();
    runner(&store, vec![put("a", "1", "x"), put("gone", "2", "y")])
        .run()
        .await
        .expect("first run");
    let now = runner(&store, vec![put("a", "1", "x")]);
    match now.validate().await {
        Err(Error::Validation(v)) => {
            assert_eq!(
                v.problems,
                [ValidationProblem::OrphanAudit {
                    change_ids: vec!["gone".into()]
                }]
            );
            let text = v.to_string();
            assert!(
                text.contains("flamingock audit retire <change-id>")
                    && text.contains("--orphans warn")
                    && text.contains("Flamingock::retire_orphan"),
                "{text}"
            );
        }
        other => panic!("expected an orphan, got {other:?}"),
    }
    // A change still in the pipeline cannot be retired.
    assert!(matches!(
        now.retire_orphan("a", "typo").await,
        Err(Error::FixRefused { .. })
    ));
    assert!(matches!(
        now.retire_orphan("never-recorded", "typo").await,
        Err(Error::UnknownChange { .. })
    ));
    let entry = now
        .retire_orphan("gone", "merged into a")
        .await
        .expect("retire");
    assert_eq!(entry.state, AuditState::ManualMarkedAsRolledBack);
    assert_eq!(entry.metadata["retired"], true);
    assert_eq!(entry.metadata["reason"], "merged into a");
    assert_eq!(entry.metadata["operator"], "ops");
    assert_eq!(entry.metadata["previous_state"], "APPLIED");
    now.validate()
        .await
        .expect("the retired orphan is no issue");
    now.run().await.expect("runs");
    assert!(matches!(
        now.retire_orphan("gone", "again").await,
        Err(Error::FixRefused { .. })
    ));
    let history = now
        .history(&HistoryFilter::all().change("gone"))
        .await
        .expect("history");
    assert_eq!(history.len(), 2, "the applied entry is kept: {history:#?}");
}

#[tokio::test]
async fn an_accepted_checksum_ends_the_drift() {
    let store = InMemoryAuditStore::new();
    runner(&store, vec![put("a", "1", "sha256:old")])
        .run()
        .await
        .expect("first run");
    let edited = runner(&store, vec![put("a", "1", "sha256:new")]);
    assert!(matches!(
        edited.validate().await,
        Err(Error::Validation(v)) if matches!(v.problems[..], [ValidationProblem::ChecksumDrift { .. }])
    ));
    let entry = edited
        .accept_checksum("a", "comment-only edit")
        .await
        .expect("accept");
    assert_eq!(entry.state, AuditState::ManualMarkedAsApplied);
    assert_eq!(entry.checksum.as_deref(), Some("sha256:new"));
    assert_eq!(entry.metadata["previous_checksum"], "sha256:old");
    assert_eq!(entry.metadata["reason"], "comment-only edit");
    edited.validate().await.expect("no drift any more");
    // Nothing left to accept, and the old content is drift now.
    assert!(matches!(
        edited.accept_checksum("a", "again").await,
        Err(Error::FixRefused { .. })
    ));
    assert!(runner(&store, vec![put("a", "1", "sha256:old")])
        .validate()
        .await
        .is_err());
    assert_eq!(
        store.shared_target("db").get("a").as_deref(),
        Some("1"),
        "never re-run"
    );
}

#[tokio::test]
async fn a_baseline_records_a_change_that_has_no_entry() {
    let store = InMemoryAuditStore::new();
    let r = runner(
        &store,
        vec![put("a", "1", "sha256:a"), put("b", "2", "sha256:b")],
    );
    // The ordinary fix refuses: there is nothing recorded to fix.
    assert!(matches!(
        r.mark_applied("a", "done by hand").await,
        Err(Error::UnknownChange { .. })
    ));
    assert!(matches!(
        r.baseline("not-declared", "x").await,
        Err(Error::FixRefused { .. })
    ));
    let entry = r
        .baseline("a", "created by hand in 2023")
        .await
        .expect("baseline");
    assert_eq!(entry.state, AuditState::ManualMarkedAsApplied);
    assert_eq!(
        (
            entry.stage_id.as_str(),
            entry.order.as_str(),
            entry.author.as_str()
        ),
        ("s", "1", "ana")
    );
    assert_eq!(entry.target_system, "db");
    assert_eq!(entry.checksum.as_deref(), Some("sha256:a"));
    assert_eq!(entry.metadata["baseline"], true);
    assert!(matches!(
        r.baseline("a", "twice").await,
        Err(Error::FixRefused { .. })
    ));
    let report = r.run().await.expect("run");
    assert_eq!(report.applied(), ["b"], "a is skipped");
    assert_eq!(store.shared_target("db").get("a"), None);
}
