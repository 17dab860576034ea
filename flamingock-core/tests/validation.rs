//! Bad input is reported before anything runs, every problem at once.

use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
use flamingock_core::{
    Change, ChangeMeta, ChangeResult, DependencyTarget, Error, Flamingock, Stage,
    TargetCapabilities, TargetError, TargetSystem, ValidationProblem,
};

struct Kv(ChangeMeta);
impl Change for Kv {
    type Target = InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        self.0.clone()
    }
    async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
        tx.incr(&self.0.id);
        Ok(())
    }
}

struct Dep(ChangeMeta);
impl Change for Dep {
    type Target = DependencyTarget<()>;
    fn meta(&self) -> ChangeMeta {
        self.0.clone()
    }
    async fn apply(&self, _: &mut ()) -> ChangeResult {
        Ok(())
    }
}

fn kv(id: &str, order: &str) -> Kv {
    Kv(ChangeMeta::new(id).order(order))
}

fn problems(result: Result<Flamingock, Error>) -> Vec<ValidationProblem> {
    match result {
        Err(Error::Validation(v)) => v.problems,
        other => panic!("expected validation errors, got {other:?}"),
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let store = InMemoryAuditStore::new();
    let long = "x".repeat(256);
    let result = Flamingock::builder()
        .audit_store(store.clone())
        .target(store.shared_target("db"))
        .target(DependencyTarget::new("flags", ()))
        .stage(
            Stage::new("one")
                .change(kv("a", "0001"))
                .change(kv("b", "0001"))
                .change(kv("", "0002"))
                .change(kv(&long, "0003"))
                .change(kv("tab\there", "0004"))
                .change(Kv(ChangeMeta::new("no-order"))),
        )
        .stage(
            Stage::new("two")
                .change(kv("a", "0001"))
                .change(Kv(ChangeMeta::new("ghost").order("0002").target("nope")))
                .change(Dep(ChangeMeta::new("flag-tx")
                    .order("0003")
                    .transactional(true)))
                .change(Kv(ChangeMeta::new("wrong-type")
                    .order("0004")
                    .target("flags"))),
        )
        .build();
    let p = problems(result);
    let text = Error::Validation(flamingock_core::ValidationErrors {
        problems: p.clone(),
    })
    .to_string();
    assert!(p.contains(&ValidationProblem::DuplicateOrder {
        stage: "one".into(),
        order: "0001".into(),
        change_ids: vec!["a".into(), "b".into()],
    }));
    assert!(p.contains(&ValidationProblem::EmptyId {
        stage: "one".into(),
        order: "0002".into(),
    }));
    assert!(p.contains(&ValidationProblem::IdTooLong {
        change_id: long.clone(),
        len: 256,
    }));
    assert!(p.contains(&ValidationProblem::UnprintableId {
        change_id: "tab\there".into(),
    }));
    assert!(p.contains(&ValidationProblem::DuplicateId {
        change_id: "a".into(),
        stages: vec!["one".into(), "two".into()],
    }));
    assert!(p.iter().any(|x| matches!(x,
        ValidationProblem::UnknownTarget { change_id, target, known }
            if change_id == "ghost" && target == "nope" && known == &["db".to_owned(), "flags".to_owned()])));
    assert!(p.contains(&ValidationProblem::TransactionalUnsupported {
        change_id: "flag-tx".into(),
        target: "flags".into(),
    }));
    assert!(p.iter().any(|x| matches!(x,
        ValidationProblem::TargetTypeMismatch { change_id, target, .. }
            if change_id == "wrong-type" && target == "flags")));
    assert!(p.contains(&ValidationProblem::EmptyOrder {
        stage: "one".into(),
        change_id: "no-order".into(),
    }));
    assert_eq!(p.len(), 9, "{p:#?}");
    assert!(
        text.starts_with("invalid pipeline, 9 problem(s):"),
        "{text}"
    );
    assert!(
        text.contains("change 'no-order' has no order; give it one with ChangeMeta::order"),
        "{text}"
    );
    assert!(
        text.contains("target system 'nope' is not registered (registered: db, flags)"),
        "{text}"
    );
}

#[test]
fn target_defaults_to_the_only_one_of_its_type_and_ambiguity_is_an_error() {
    let store = InMemoryAuditStore::new();
    Flamingock::builder()
        .audit_store(store.clone())
        .target(store.shared_target("db"))
        .stage(Stage::new("s").change(kv("a", "1")))
        .build()
        .expect("one target of the type: no need to name it");

    let p = problems(
        Flamingock::builder()
            .audit_store(store.clone())
            .target(store.shared_target("db"))
            .target(InMemoryTarget::new("other"))
            .stage(Stage::new("s").change(kv("a", "1")))
            .build(),
    );
    assert_eq!(
        p,
        [ValidationProblem::AmbiguousTarget {
            change_id: "a".into(),
            candidates: vec!["db".into(), "other".into()],
        }]
    );

    let p = problems(
        Flamingock::builder()
            .audit_store(store.clone())
            .stage(Stage::new("s").change(kv("a", "1")))
            .build(),
    );
    assert!(
        matches!(&p[..], [ValidationProblem::UnknownTarget { change_id, .. }] if change_id == "a")
    );
}

#[test]
fn duplicate_targets_and_stages_are_reported() {
    let store = InMemoryAuditStore::new();
    let p = problems(
        Flamingock::builder()
            .audit_store(store.clone())
            .target(store.shared_target("db"))
            .target(InMemoryTarget::new("db"))
            .stage(Stage::new("s").change(kv("a", "1").with_target("db")))
            .stage(Stage::new("s"))
            .stage(Stage::new(""))
            .build(),
    );
    assert!(p.contains(&ValidationProblem::DuplicateTarget {
        target: "db".into()
    }));
    assert!(p.contains(&ValidationProblem::BadStage {
        stage: "s".into(),
        detail: "stage id used twice".into(),
    }));
    assert!(p.contains(&ValidationProblem::BadStage {
        stage: String::new(),
        detail: "empty stage id".into(),
    }));
}

impl Kv {
    fn with_target(self, t: &str) -> Self {
        Kv(self.0.target(t))
    }
}

/// A transactional kind of target on a deployment without transactions.
#[derive(Clone)]
struct Standalone;
impl TargetSystem for Standalone {
    type Context = ();
    fn id(&self) -> &str {
        "standalone"
    }
    fn capabilities(&self) -> TargetCapabilities {
        TargetCapabilities::transactional()
            .transactions_unavailable("the server is a standalone node; run a replica set")
    }
    async fn begin(&self, _: flamingock_core::ContextMode) -> Result<(), TargetError> {
        Ok(())
    }
    async fn commit(&self, _: (), _: flamingock_core::CommitWith<'_>) -> Result<(), TargetError> {
        Ok(())
    }
    async fn abort(&self, _: ()) -> Result<(), TargetError> {
        Ok(())
    }
}

struct OnStandalone(ChangeMeta);
impl Change for OnStandalone {
    type Target = Standalone;
    fn meta(&self) -> ChangeMeta {
        self.0.clone()
    }
    async fn apply(&self, _: &mut ()) -> ChangeResult {
        Ok(())
    }
}

#[test]
fn default_transactional_changes_fail_on_a_deployment_without_transactions() {
    let store = InMemoryAuditStore::new();
    let p = problems(
        Flamingock::builder()
            .audit_store(store.clone())
            .target(Standalone)
            .stage(
                Stage::new("s")
                    .change(OnStandalone(ChangeMeta::new("needs-tx").order("1")))
                    .change(OnStandalone(
                        ChangeMeta::new("explicit-tx")
                            .order("2")
                            .transactional(true),
                    ))
                    .change(OnStandalone(
                        ChangeMeta::new("no-tx").order("3").transactional(false),
                    )),
            )
            .build(),
    );
    assert_eq!(p.len(), 2, "{p:#?}");
    for (problem, id) in p.iter().zip(["needs-tx", "explicit-tx"]) {
        assert!(
            matches!(problem, ValidationProblem::TransactionsUnavailable { change_id, reason, .. }
                if change_id == id && reason.contains("replica set")),
            "{problem:?}"
        );
    }
}

#[test]
fn missing_store_or_lock_is_a_configuration_error() {
    assert!(
        matches!(Flamingock::builder().build(), Err(Error::Config(m)) if m.contains("audit_store"))
    );
}

#[tokio::test]
async fn nothing_runs_when_validation_fails() {
    let store = InMemoryAuditStore::new();
    let target = store.shared_target("db");
    let built = Flamingock::builder()
        .audit_store(store.clone())
        .target(target.clone())
        .stage(Stage::new("s").change(kv("a", "1")).change(kv("b", "1")))
        .build();
    assert!(built.is_err());
    assert!(target.values().is_empty());
    assert_eq!(store.history_len(), 0);
}

#[test]
fn orders_whose_numbers_sort_differently_than_their_text_are_refused() {
    let store = InMemoryAuditStore::new();
    let p = problems(
        Flamingock::builder()
            .audit_store(store.clone())
            .target(store.shared_target("db"))
            .stage(
                Stage::new("s")
                    .change(kv("a", "1_1"))
                    .change(kv("b", "1_2"))
                    .change(kv("c", "1_10")),
            )
            // Reported together with the other problems.
            .stage(Stage::new("t").change(kv("d", "1")).change(kv("e", "1")))
            .build(),
    );
    assert!(
        p.contains(&ValidationProblem::NumericOrderMismatch {
            stage: "s".into(),
            pairs: vec![(("c".into(), "1_10".into()), ("b".into(), "1_2".into()))],
        }),
        "{p:#?}"
    );
    assert!(p
        .iter()
        .any(|p| matches!(p, ValidationProblem::DuplicateOrder { stage, .. } if stage == "t")));
    let text = p[0].to_string();
    assert!(
        text.contains("'c' (order 1_10) runs before 'b' (order 1_2)") && text.contains("zero-pad"),
        "{text}"
    );

    // Orders that sort the same as text and as numbers stay accepted.
    Flamingock::builder()
        .audit_store(store.clone())
        .target(store.shared_target("db"))
        .stage(
            Stage::new("s")
                .change(kv("a", "1_01"))
                .change(kv("b", "1_02"))
                .change(kv("c", "1_10"))
                .change(kv("d", "1_10-late")),
        )
        .build()
        .expect("zero-padded orders are valid");
}
