//! What users see when they print an error with `{:?}`, as
//! `fn main() -> Result<(), Box<dyn Error>>` does when it returns one.

use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
use flamingock_core::{Change, ChangeMeta, ChangeResult, Error, Flamingock, Stage};

#[derive(Debug, thiserror::Error)]
#[error("the disk is full")]
struct DiskFull;

#[derive(Debug, thiserror::Error)]
#[error("cannot write the users table")]
struct WriteFailed(#[source] DiskFull);

struct Fails;
impl Change for Fails {
    type Target = InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("add-users")
            .order("0001")
            .transactional(false)
    }
    async fn apply(&self, _: &mut KvTx) -> ChangeResult {
        Err(Box::new(WriteFailed(DiskFull)))
    }
}

/// A run whose one change fails.
async fn failed_run() -> Error {
    let store = InMemoryAuditStore::new();
    Flamingock::builder()
        .audit_store(store.clone())
        .target(store.shared_target("db"))
        .stage(Stage::new("schema").change(Fails))
        .build()
        .expect("build")
        .run()
        .await
        .expect_err("the change fails")
}

#[tokio::test]
async fn a_failed_run_debug_prints_as_a_message_with_its_causes() {
    let err = failed_run().await;
    let Error::ChangeFailed { report, .. } = &err else {
        panic!("expected ChangeFailed, got {err:?}");
    };
    let run_id = report.run_id.clone();
    let boxed: Box<dyn std::error::Error> = err.into();
    let debug = format!("{boxed:?}");
    assert_eq!(
        debug,
        format!(
            "run {run_id} stopped at change 'add-users'\n\
             \n\
             Caused by:\n    change 'add-users' (stage 'schema') failed\n    \
             cannot write the users table\n    the disk is full"
        ),
    );
    assert_eq!(format!("{boxed:#?}"), debug);
    for dump in ["ChangeFailed", "RunReport", "failure:", "{"] {
        assert!(!debug.contains(dump), "{debug}");
    }
}

/// Each layer says what it knows and keeps its cause as `source()`, never
/// both: walking the chain (as anyhow's `{:#}` does) prints every cause once.
#[tokio::test]
async fn every_cause_prints_once_along_the_chain() {
    let err = failed_run().await;
    let mut layers = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = cur {
        layers.push(e.to_string());
        cur = e.source();
    }
    assert_eq!(layers.len(), 4, "{layers:?}");
    for pair in layers.windows(2) {
        assert!(
            !pair[0].contains(&pair[1]),
            "{:?} repeats its cause {:?}",
            pair[0],
            pair[1]
        );
    }
    let line = flamingock_core::error::Chain(&err).to_string();
    assert_eq!(line.matches("the disk is full").count(), 1, "{line}");
    let target = flamingock_core::TargetError::NotCommitted {
        target: "db".into(),
        source: Box::new(WriteFailed(DiskFull)),
    };
    assert_eq!(
        flamingock_core::error::Chain(&target).to_string(),
        "target system db: transaction refused, nothing committed: cannot write the users \
         table: the disk is full"
    );
}

#[test]
fn a_validation_error_debug_prints_as_its_message() {
    let store = InMemoryAuditStore::new();
    struct Dup(&'static str);
    impl Change for Dup {
        type Target = InMemoryTarget;
        fn meta(&self) -> ChangeMeta {
            ChangeMeta::new(self.0).order("0001")
        }
        async fn apply(&self, _: &mut KvTx) -> ChangeResult {
            Ok(())
        }
    }
    let err = Flamingock::builder()
        .audit_store(store.clone())
        .target(store.shared_target("db"))
        .stage(Stage::new("s").change(Dup("a")).change(Dup("b")))
        .build()
        .expect_err("duplicate order");
    assert_eq!(format!("{err:?}"), err.to_string());
    assert!(
        format!("{err:?}")
            .starts_with("invalid pipeline, 1 problem(s):\n  - stage 's': order '0001'"),
        "{err:?}"
    );
}

/// The report an error carries is the run's own, complete when the error is
/// made: its id (the one the audit entries carry), the lock and epoch it
/// took, a line for every change and the time it ran.
#[tokio::test]
async fn a_failed_run_carries_its_whole_report() {
    struct Ok1;
    impl Change for Ok1 {
        type Target = InMemoryTarget;
        fn meta(&self) -> ChangeMeta {
            ChangeMeta::new("create-users").order("0000")
        }
        async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
            tx.put("users", "");
            Ok(())
        }
    }
    let store = InMemoryAuditStore::new();
    let err = Flamingock::builder()
        .audit_store(store.clone())
        .target(store.shared_target("db"))
        .stage(Stage::new("schema").change(Ok1).change(Fails))
        .stage(Stage::new("data").change(Later))
        .build()
        .expect("build")
        .run()
        .await
        .expect_err("the change fails");
    let report = err.report().expect("a failed run carries its report");
    let history =
        flamingock_core::AuditStore::history(&store, &flamingock_core::HistoryFilter::all())
            .await
            .expect("history");
    assert!(!report.run_id.is_empty());
    assert!(history.iter().all(|e| e.run_id == report.run_id));
    assert!(report.took_lock);
    assert_eq!(report.fencing_token, Some(1));
    let ids: Vec<&str> = report.changes.iter().map(|c| &*c.change_id).collect();
    assert_eq!(ids, ["create-users", "add-users", "later"]);
    assert_eq!(report.applied(), ["create-users"]);
    assert!(report.duration > std::time::Duration::ZERO);
}

struct Later;
impl Change for Later {
    type Target = InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("later").order("0002")
    }
    async fn apply(&self, _: &mut KvTx) -> ChangeResult {
        Ok(())
    }
}
