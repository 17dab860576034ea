//! Checks of the code against the audit: checksum drift and orphans.

use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
use flamingock_core::{
    Change, ChangeMeta, ChangeResult, CheckPolicy, Error, Flamingock, Stage, ValidationProblem,
};

struct Template {
    id: &'static str,
    checksum: &'static str,
}

impl Change for Template {
    type Target = InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(self.id)
            .order("0001")
            .checksum(self.checksum)
    }
    async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
        tx.incr(self.id);
        Ok(())
    }
}

fn runner(store: &InMemoryAuditStore, checksum: &'static str, drift: CheckPolicy) -> Flamingock {
    Flamingock::builder()
        .audit_store(store.clone())
        .target(store.shared_target("db"))
        .stage(Stage::new("s").change(Template { id: "t", checksum }))
        .drift(drift)
        .build()
        .expect("build")
}

#[tokio::test]
async fn an_edited_applied_change_is_drift() {
    let store = InMemoryAuditStore::new();
    runner(&store, "sha256:aaa", CheckPolicy::Error)
        .run()
        .await
        .expect("first run");
    let snap = store.shared_target("db");
    assert_eq!(snap.get("t").as_deref(), Some("1"));

    match runner(&store, "sha256:bbb", CheckPolicy::Error).run().await {
        Err(Error::Validation(v)) => assert_eq!(
            v.problems,
            [ValidationProblem::ChecksumDrift {
                change_id: "t".into(),
                recorded: "sha256:aaa".into(),
                current: "sha256:bbb".into(),
            }]
        ),
        other => panic!("expected drift, got {other:?}"),
    }
    assert!(matches!(
        runner(&store, "sha256:bbb", CheckPolicy::Error)
            .validate()
            .await,
        Err(Error::Validation(_))
    ));
    let r = runner(&store, "sha256:bbb", CheckPolicy::Warn)
        .run()
        .await
        .expect("warn policy goes on");
    assert_eq!(
        r.totals().skipped,
        1,
        "an applied change is never re-run for drift"
    );
    runner(&store, "sha256:aaa", CheckPolicy::Error)
        .run()
        .await
        .expect("unchanged content is fine");
    assert_eq!(snap.get("t").as_deref(), Some("1"));
}
