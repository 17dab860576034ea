//! Bad input and failures, the same checks on every backend: stored entries
//! that do not parse, tables missing (auto-create off) or of another shape,
//! a fence rejection inside a change's transaction, connections killed in
//! the middle of a run, wrong credentials.
//!
//! The checks are written once here; a backend supplies small hooks
//! ([`BadInputUnderTest`]) that do what only it can: corrupt a stored entry,
//! open a store with auto-create off, put a table of another shape in
//! place, kill its server connections, connect with a wrong password. A
//! hook the backend cannot have (SQLite has no connections to kill, moto
//! takes any credentials) is listed in the macro's `ignored` list with the
//! reason, so the check shows as ignored, never as passed.

use flamingock_core::error::ErrorChain as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flamingock_core::{
    AuditEntry, AuditState, AuditStore, CommitWith, ContextMode, Flamingock, HistoryFilter,
    LockConfig, Stage, StoreError, TargetError, TargetSystem, TxStrategy,
};

use crate::namespace;
use crate::pipeline_suite::{Kind, PipelineEnv, PipelineUnderTest};
use crate::process_suite::Bump;
use crate::BoxError;

/// A store opened with auto-create off on a namespace where nothing exists.
#[derive(Debug)]
pub struct Unprepared {
    /// The store.
    pub store: Arc<dyn AuditStore>,
    /// Names the "not ready" error must show (tables, collections).
    pub names: Vec<String>,
    /// The statements the error offers, when the backend has them: the
    /// check runs them through [`BadInputUnderTest::run_ddl`] and expects
    /// the store to work afterwards.
    pub ddl: Option<String>,
}

/// A store facing a table of another shape.
#[derive(Debug)]
pub struct Misshapen {
    /// The store (auto-create on).
    pub store: Arc<dyn AuditStore>,
    /// The table the error must name.
    pub table: String,
    /// What the error must say is wrong (e.g. the missing column).
    pub detail: String,
}

/// The hooks a backend gives the bad-input suite, on top of its
/// [`PipelineUnderTest`].
#[async_trait]
pub trait BadInputUnderTest: PipelineUnderTest {
    /// Overwrites the stored state of `change_id` in `ns` (where
    /// [`AuditStore::snapshot`] reads it) with `bad_state`, bypassing the
    /// store. Returns the name of the table (collection, item set) the error
    /// must name.
    async fn corrupt_state(
        &self,
        ns: &str,
        change_id: &str,
        bad_state: &str,
    ) -> Result<String, BoxError>;

    /// Opens the audit store on `ns` (where nothing exists) with
    /// auto-create off.
    async fn open_without_auto_create(&self, ns: &str) -> Result<Unprepared, BoxError>;

    /// Runs the statements an [`Unprepared`] store's error offered, as an
    /// operator would.
    async fn run_ddl(&self, ns: &str, ddl: &str) -> Result<(), BoxError> {
        let _ = (ns, ddl);
        Err("this backend offers no DDL".into())
    }

    /// Puts an audit table of another shape in place in `ns` and opens the
    /// store on it.
    async fn misshape(&self, ns: &str) -> Result<Misshapen, BoxError>;

    /// Kills every server connection (session) the handles of `ns` have
    /// open; returns how many it killed.
    async fn kill_connections(&self, ns: &str) -> Result<usize, BoxError> {
        let _ = ns;
        Err("this backend has no connections to kill".into())
    }

    /// Opens the store as `user` (who does not exist) with password
    /// `secret`; returns the error's text and its `Debug` form.
    async fn connect_as(&self, user: &str, secret: &str) -> Result<String, BoxError> {
        let _ = (user, secret);
        Err("this backend has no credentials".into())
    }
}

fn best<T>(env: &PipelineEnv<T>) -> (Kind, &T) {
    if let Some(t) = &env.shared {
        return (Kind::Shared, t);
    }
    if let Some(t) = &env.separate_marker {
        return (Kind::SeparateMarker, t);
    }
    (
        Kind::Separate,
        env.separate
            .as_ref()
            .expect("the bad-input suite needs a transactional target"),
    )
}

fn runner<H: PipelineUnderTest>(
    env: &PipelineEnv<H::Target>,
    ids: &[&str],
    pause: Duration,
    lock: LockConfig,
) -> Flamingock {
    let (_, target) = best(env);
    let mut stage = Stage::new("bad-input");
    for id in ids {
        stage.add(Bump::<H> {
            id: (*id).to_owned(),
            target: target.id().to_owned(),
            pause,
            _h: std::marker::PhantomData,
        });
    }
    Flamingock::builder()
        .service("bad-input-suite")
        .audit_store(env.store.clone())
        .lock_provider(env.lock.clone())
        .target(target.clone())
        .stage(stage)
        .lock_config(lock)
        .build()
        .expect("build the runner")
}

fn short_lock() -> LockConfig {
    LockConfig::default()
        .lease(Duration::from_secs(2))
        .retry_interval(Duration::from_millis(100))
        .acquire_timeout(Duration::from_secs(30))
}

/// A stored state that is not one of the audit states is an error naming
/// the table, the change and the value, never read as something else; a
/// run on that store stops before applying anything new.
pub async fn malformed_entries_are_named_not_misread<H: BadInputUnderTest>(sut: &H) {
    let ns = namespace("badrow");
    let env = sut.open(&ns).await.expect("open backend");
    runner::<H>(&env, &["c01", "c02"], Duration::ZERO, short_lock())
        .run()
        .await
        .expect("first run");
    let table = sut
        .corrupt_state(&ns, "c01", "EXPLODED")
        .await
        .expect("corrupt an entry");
    let err = env.store.snapshot().await.expect_err("a malformed state");
    let text = err.chain().to_string();
    assert!(matches!(err, StoreError::Malformed { .. }), "{err:?}");
    for part in [table.as_str(), "c01", "EXPLODED"] {
        assert!(text.contains(part), "the error names {part:?}: {text}");
    }
    let err = runner::<H>(&env, &["c01", "c02", "c03"], Duration::ZERO, short_lock())
        .run()
        .await
        .expect_err("a run on a malformed store stops");
    assert!(err.chain().to_string().contains("c01"), "{err}");
    let (_, target) = best(&env);
    assert_eq!(
        sut.count(target, "c03").await.expect("count"),
        0,
        "nothing new was applied"
    );
    let _ = sut.cleanup(&ns).await;
}

/// With auto-create off, a store whose tables do not exist is "not ready",
/// naming what is missing, and creates nothing; the statements its error
/// offers (when the backend has them) make it work.
pub async fn missing_tables_are_not_ready_without_auto_create<H: BadInputUnderTest>(sut: &H) {
    let ns = namespace("nocreate");
    let u = sut
        .open_without_auto_create(&ns)
        .await
        .expect("open without auto-create");
    let err = u.store.prepare().await.expect_err("the tables are missing");
    let text = err.chain().to_string();
    assert!(matches!(err, StoreError::NotReady { .. }), "{err:?}");
    for name in &u.names {
        assert!(
            text.contains(name.as_str()),
            "the error names {name}: {text}"
        );
    }
    let created = sut.footprint(&ns).await.expect("footprint");
    assert!(created.is_empty(), "nothing was created: {created:?}");
    if let Some(ddl) = &u.ddl {
        sut.run_ddl(&ns, ddl).await.expect("run the offered DDL");
        u.store.prepare().await.expect("prepared after the DDL");
        let epoch = u.store.claim_fence().await.expect("claim");
        u.store
            .append(&AuditEntry::new("a", AuditState::Applied, epoch))
            .await
            .expect("append");
        assert_eq!(u.store.snapshot().await.expect("snapshot").len(), 1);
    }
    let _ = sut.cleanup(&ns).await;
}

/// A table of another shape is reported, naming it and what is wrong, and
/// not used: `prepare` refuses it (as malformed, or as not ready when the
/// table cannot even be addressed as an audit table, e.g. DynamoDB's key
/// schema), and so does reading it.
pub async fn misshapen_tables_are_reported_not_used<H: BadInputUnderTest>(sut: &H) {
    let ns = namespace("shape");
    let m = sut.misshape(&ns).await.expect("a table of another shape");
    let err = m.store.prepare().await.expect_err("another shape");
    let text = err.chain().to_string();
    assert!(
        matches!(
            err,
            StoreError::Malformed { .. } | StoreError::NotReady { .. }
        ),
        "{err:?}"
    );
    assert!(
        text.contains(&m.table),
        "the error names {}: {text}",
        m.table
    );
    assert!(
        text.contains(&m.detail),
        "the error says {:?}: {text}",
        m.detail
    );
    let read = m.store.snapshot().await;
    assert!(
        read.is_err(),
        "reading a table of another shape is an error, not an answer: {read:?}"
    );
    let _ = sut.cleanup(&ns).await;
}

/// The shared-transaction contract, on the backend's own target: an
/// APPLIED entry whose token is below the fence is refused inside the
/// change's transaction (`TargetError::Audit` wrapping `Fenced`), and the
/// change's effect goes with it; with the current token both commit.
pub async fn fenced_shared_commit_rolls_the_change_back<H: BadInputUnderTest>(sut: &H) {
    let ns = namespace("fenced");
    let env = sut.open(&ns).await.expect("open backend");
    let target = env
        .shared
        .as_ref()
        .expect("a backend with a shared target (else list this check as ignored)");
    env.store.prepare().await.expect("prepare");
    let mut epoch = 0;
    for _ in 0..7 {
        epoch = env.store.claim_fence().await.expect("claim");
    }
    let mut ctx = target.begin(ContextMode::Transaction).await.expect("begin");
    H::bump(&mut ctx, "fenced").await.expect("effect");
    let stale = AuditEntry::new("c", AuditState::Applied, epoch - 1).strategy(TxStrategy::SharedTx);
    match target.commit(ctx, CommitWith::Audit(&stale)).await {
        Err(TargetError::Audit {
            source: StoreError::Fenced { token, fence, .. },
            ..
        }) => assert_eq!((token, fence), (epoch - 1, epoch)),
        other => panic!("expected a fence rejection, got {other:?}"),
    }
    assert_eq!(
        sut.count(target, "fenced").await.expect("count"),
        0,
        "the change's effect was rolled back with the refused audit write"
    );
    assert!(env.store.snapshot().await.expect("snapshot").is_empty());
    let mut ctx = target.begin(ContextMode::Transaction).await.expect("begin");
    H::bump(&mut ctx, "fenced").await.expect("effect");
    let current = AuditEntry::new("c", AuditState::Applied, epoch).strategy(TxStrategy::SharedTx);
    target
        .commit(ctx, CommitWith::Audit(&current))
        .await
        .expect("commit with the current token");
    assert_eq!(sut.count(target, "fenced").await.expect("count"), 1);
    assert_eq!(env.store.snapshot().await.expect("snapshot").len(), 1);
    let _ = sut.cleanup(&ns).await;
}

/// Every server connection of a run is killed in the middle of it: the run
/// may fail or get through (the pool may replace a dead connection before
/// it is used), nothing recorded is lost, and the next
/// run, on the same handles, applies every change exactly once.
pub async fn connections_killed_mid_run_lose_nothing<H: BadInputUnderTest>(sut: &H) {
    const N: usize = 8;
    let ids: Vec<String> = (0..N).map(|i| format!("c{i:02}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let ns = namespace("killed");
    let env = sut.open(&ns).await.expect("open backend");
    let first = runner::<H>(&env, &ids, Duration::from_millis(150), short_lock());
    let run = tokio::spawn(async move { first.run().await });
    tokio::time::sleep(Duration::from_millis(600)).await;
    let killed = sut.kill_connections(&ns).await.expect("kill connections");
    assert!(killed > 0, "the run had connections to kill");
    // Either outcome is right; what counts is what the store kept.
    let _ = run.await.expect("join");
    let before = env
        .store
        .history(&HistoryFilter::all())
        .await
        .expect("history after the kill");
    let again = runner::<H>(&env, &ids, Duration::ZERO, short_lock())
        .run()
        .await
        .expect("the next run finishes the work");
    let (_, target) = best(&env);
    for id in &ids {
        assert_eq!(
            sut.count(target, id).await.expect("count"),
            1,
            "{id}: exactly once ({again})"
        );
    }
    let after = env
        .store
        .history(&HistoryFilter::all())
        .await
        .expect("history");
    for e in &before {
        assert!(
            after.contains(e),
            "an entry recorded before the kill was lost: {e:?}"
        );
    }
    for id in &ids {
        let n = after
            .iter()
            .filter(|e| e.change_id == *id && e.state == AuditState::Applied)
            .count();
        assert_eq!(n, 1, "{id}: one APPLIED entry");
    }
    let _ = sut.cleanup(&ns).await;
}

/// Wrong credentials are a clear error naming the user, and the password
/// is never echoed (neither in the message nor in the `Debug` form).
pub async fn wrong_credentials_are_clear_and_hide_the_password<H: BadInputUnderTest>(sut: &H) {
    let (user, secret) = ("flamingock_nobody", "s3cret-Pw-7f1");
    let text = sut
        .connect_as(user, secret)
        .await
        .expect("the hook opens a store and returns its error");
    assert!(text.contains(user), "the error names the user: {text}");
    assert!(!text.contains(secret), "the password is echoed: {text}");
}

/// Expands to the bad-input checks for a backend: all of them with
/// `bad_input_tests!(sut)`, or `run` lists the checks that apply and
/// `ignored` the others with the reason (shown by the test harness). Every check is one of:
/// `malformed_entries_are_named_not_misread`,
/// `missing_tables_are_not_ready_without_auto_create`,
/// `misshapen_tables_are_reported_not_used`,
/// `fenced_shared_commit_rolls_the_change_back`,
/// `connections_killed_mid_run_lose_nothing`,
/// `wrong_credentials_are_clear_and_hide_the_password`.
///
/// ```ignore
/// flamingock_test_support::bad_input_tests!(sut,
///     run: [malformed_entries_are_named_not_misread, fenced_shared_commit_rolls_the_change_back],
///     ignored: [wrong_credentials_are_clear_and_hide_the_password = "SQLite has no credentials"],
/// );
/// ```
#[macro_export]
macro_rules! bad_input_tests {
    ($sut:path) => {
        $crate::bad_input_tests!($sut,
            run: [
                malformed_entries_are_named_not_misread,
                missing_tables_are_not_ready_without_auto_create,
                misshapen_tables_are_reported_not_used,
                fenced_shared_commit_rolls_the_change_back,
                connections_killed_mid_run_lose_nothing,
                wrong_credentials_are_clear_and_hide_the_password,
            ],
            ignored: [],
        );
    };
    ($sut:path, run: [$($check:ident),* $(,)?], ignored: [$($skip:ident = $why:literal),* $(,)?] $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let sut = $sut().await.expect(
                    "the backend under test is unavailable: a check never passes without running",
                );
                $crate::bad_input_suite::$check(&sut).await;
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $why]
            async fn $skip() {
                let sut = $sut().await.expect(
                    "the backend under test is unavailable: a check never passes without running",
                );
                $crate::bad_input_suite::$skip(&sut).await;
            }
        )*
    };
}
