//! A baseline up to a change: a system already in place (built by hand,
//! restored from a dump, migrated by another tool) is recorded as applied up
//! to that change, and only what follows runs.

use flamingock_core::error::ErrorChain as _;
use flamingock_core::memory::{InMemoryAuditStore, KvTx};
use flamingock_core::{
    AuditState, AuditStore, Change, ChangeMeta, ChangeResult, Error, Flamingock, HistoryFilter,
    Stage,
};

struct Put {
    id: &'static str,
    order: &'static str,
}

impl Change for Put {
    type Target = flamingock_core::memory::InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(self.id).order(self.order).author("ana")
    }
    async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
        tx.incr(self.id);
        Ok(())
    }
}

/// Stages of (stage id, [(change id, order)]).
fn runner(
    store: &InMemoryAuditStore,
    stages: &[(&str, &[(&'static str, &'static str)])],
) -> Flamingock {
    let mut b = Flamingock::builder()
        .audit_store(store.clone())
        .target(store.shared_target("db"))
        .metadata(serde_json::json!({ "operator": "ops" }));
    for (id, changes) in stages {
        let mut stage = Stage::new(*id);
        for (id, order) in changes.iter() {
            stage.add(Put { id, order });
        }
        b = b.stage(stage);
    }
    b.build().expect("build")
}

const THREE: &[(&str, &[(&str, &str)])] = &[(
    "s",
    &[
        ("create-users", "0001"),
        ("create-orders", "0002"),
        ("add-index", "0003"),
    ],
)];

#[tokio::test]
async fn changes_up_to_the_given_one_are_recorded_and_only_the_rest_runs() {
    let store = InMemoryAuditStore::new();
    let r = runner(&store, THREE);
    let written = r
        .baseline_up_to("0002", "restored from a dump")
        .await
        .expect("baseline by order");
    let ids: Vec<&str> = written.iter().map(|e| e.change_id.as_str()).collect();
    assert_eq!(ids, ["create-users", "create-orders"]);
    for e in &written {
        assert_eq!(e.state, AuditState::ManualMarkedAsApplied);
        assert_eq!(e.author, "ana");
        assert_eq!(e.metadata["baseline"], true);
        assert_eq!(e.metadata["baseline_up_to"], "0002");
        assert_eq!(e.metadata["reason"], "restored from a dump");
        assert_eq!(e.metadata["operator"], "ops");
        assert!(e.fencing_token > 0, "written under a claimed fence");
    }
    let report = r.run().await.expect("run");
    assert_eq!(report.applied(), ["add-index"]);
    assert_eq!(
        store.shared_target("db").get("create-users"),
        None,
        "never ran"
    );
    assert_eq!(
        store.shared_target("db").get("add-index").as_deref(),
        Some("1")
    );
    // Running it again changes nothing: the baselined changes are left alone.
    assert!(r
        .baseline_up_to("create-orders", "again")
        .await
        .expect("repeat")
        .is_empty());
    assert_eq!(
        r.history(&HistoryFilter::all())
            .await
            .expect("history")
            .len(),
        3
    );
}

#[tokio::test]
async fn an_interrupted_baseline_is_finished_by_running_it_again() {
    let store = InMemoryAuditStore::new();
    let r = runner(&store, THREE);
    r.baseline_up_to("create-users", "first part")
        .await
        .expect("first");
    let rest = r
        .baseline_up_to("add-index", "the rest")
        .await
        .expect("resume");
    let ids: Vec<&str> = rest.iter().map(|e| e.change_id.as_str()).collect();
    assert_eq!(ids, ["create-orders", "add-index"]);
    assert!(r.run().await.expect("run").applied().is_empty());
}

#[tokio::test]
async fn changes_with_entries_refuse_the_whole_baseline_and_nothing_is_written() {
    let store = InMemoryAuditStore::new();
    runner(&store, &[("s", &[("create-users", "0001")])])
        .run()
        .await
        .expect("first change applied");
    let r = runner(&store, THREE);
    match r.baseline_up_to("0003", "adopt").await {
        Err(Error::FixRefused { change_id, detail }) => {
            assert_eq!(change_id, "0003");
            assert!(detail.contains("create-users (APPLIED)"), "{detail}");
            assert!(detail.contains("1 of the 3"), "{detail}");
        }
        other => panic!("expected FixRefused, got {other:?}"),
    }
    assert_eq!(
        store.snapshot().await.expect("snapshot").len(),
        1,
        "nothing written"
    );
    // Up to the applied change itself: refused the same way.
    let err = r
        .baseline_up_to("create-users", "adopt")
        .await
        .expect_err("refused");
    assert!(
        err.chain().to_string().contains("create-users (APPLIED)"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unknown_or_ambiguous_point_is_refused_with_what_to_give() {
    let store = InMemoryAuditStore::new();
    let r = runner(
        &store,
        &[
            ("schema", &[("create-users", "0001")]),
            ("data", &[("seed-users", "0001")]),
        ],
    );
    let unknown = r.baseline_up_to("0009", "x").await.expect_err("unknown");
    assert!(
        unknown
            .to_string()
            .contains("no change of the loaded pipeline has this id or order"),
        "{unknown}"
    );
    let ambiguous = r.baseline_up_to("0001", "x").await.expect_err("ambiguous");
    let text = ambiguous.to_string();
    assert!(
        text.contains("create-users in stage schema") && text.contains("seed-users in stage data"),
        "{text}"
    );
    // A change id is never ambiguous: stages run in order.
    let both = r.baseline_up_to("seed-users", "x").await.expect("by id");
    assert_eq!(both.len(), 2);
    assert_eq!(store.snapshot().await.expect("snapshot").len(), 2);
}
