//! The runner end to end on a backend: exactly-once under concurrent runners,
//! the crash table of DESIGN section 5, lost leases, blocked stages, fixes,
//! validate-only and the lock-free fast path.

use flamingock_core::error::ErrorChain as _;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flamingock_core::fault::{FaultInjector, FaultPoint};
use flamingock_core::{
    AuditEntry, AuditState, AuditStore, BoxError, Change, ChangeMeta, ChangeOutcome, ChangeResult,
    DependencyTarget, Error, Event, Flamingock, FlamingockBuilder, HistoryFilter, LockConfig,
    LockError, LockProvider, NoRollback, OrphanPolicy, PlanAction, RecoveryStrategy, RunReport,
    Stage, TargetSystem, TxStrategy, ValidationProblem,
};
use futures::future::BoxFuture;

use crate::faults::{crash_at, CountingLock, Fault, FaultAction};
use crate::namespace;

/// Handles onto one namespace of a backend.
#[derive(Debug, Clone)]
pub struct PipelineEnv<T> {
    /// The audit store.
    pub store: Arc<dyn AuditStore>,
    /// The lock provider.
    pub lock: Arc<dyn LockProvider>,
    /// A transactional target sharing the store's database (shared-transaction strategy).
    pub shared: Option<T>,
    /// A transactional target elsewhere that keeps markers.
    pub separate_marker: Option<T>,
    /// A transactional target elsewhere without markers.
    pub separate: Option<T>,
}

/// What the pipeline suite may ask of a backend.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct PipelineCapabilities {
    /// Concurrent runners in [`exactly_once_concurrent_runners`].
    pub runners: usize,
    /// How many times that check repeats.
    pub repetitions: usize,
    /// Lease used by the suite's runners (a crashed runner's lease must run out
    /// before the next runner goes on).
    pub lease: Duration,
    /// The store admits one writer at a time (SQLite): while a change's
    /// transaction is open nobody else can write, not even force-release the
    /// lock or claim the fence, so a runner cannot lose its lease mid-transaction.
    pub single_writer: bool,
}

impl Default for PipelineCapabilities {
    fn default() -> Self {
        PipelineCapabilities {
            runners: 16,
            repetitions: 10,
            lease: Duration::from_millis(1200),
            single_writer: false,
        }
    }
}

impl PipelineCapabilities {
    /// Sets the repetitions of the concurrency check.
    pub fn repetitions(mut self, n: usize) -> Self {
        self.repetitions = n;
        self
    }
    /// Sets the number of concurrent runners.
    pub fn runners(mut self, n: usize) -> Self {
        self.runners = n;
        self
    }
    /// Sets the lease of the suite's runners (a slow server needs a longer one).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
    /// Declares a single-writer store (see [`PipelineCapabilities::single_writer`]).
    pub fn single_writer(mut self) -> Self {
        self.single_writer = true;
        self
    }
}

/// A backend (audit store + lock + transactional targets) under test.
#[async_trait]
pub trait PipelineUnderTest: Send + Sync + 'static {
    /// The backend's transactional target type.
    type Target: TargetSystem + Clone;
    /// Opens handles on namespace `ns`: the same `ns` gives the same data,
    /// every call gives new connections. Target ids must be distinct.
    async fn open(&self, ns: &str) -> Result<PipelineEnv<Self::Target>, BoxError>;
    /// Adds one to counter `key` through a change context (inside its
    /// transaction when it has one).
    fn bump<'a>(
        ctx: &'a mut <Self::Target as TargetSystem>::Context,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), BoxError>>;
    /// The committed value of counter `key` in `target` (0 when absent).
    async fn count(&self, target: &Self::Target, key: &str) -> Result<u64, BoxError>;
    /// Drops everything of `ns`.
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError>;
    /// What the backend's own handles have left in `ns`: the names of the
    /// tables, collections, files, items or keys of the audit store, the lock
    /// and the targets' markers that exist (not the suite's counters, which
    /// `open` may create). Empty when nothing of them exists. Has no default:
    /// every backend says where its traces would be, so
    /// [`reading_creates_nothing`] can fail.
    async fn footprint(&self, ns: &str) -> Result<Vec<String>, BoxError>;
    /// Suite parameters.
    fn capabilities(&self) -> PipelineCapabilities {
        PipelineCapabilities::default()
    }
}

/// The execution strategy a check exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Shared transaction.
    Shared,
    /// Separate transaction with marker.
    SeparateMarker,
    /// Separate transaction.
    Separate,
    /// Non-transactional (an in-process dependency target, `effects`).
    NonTx,
}

impl Kind {
    fn strategy(self) -> TxStrategy {
        match self {
            Kind::Shared => TxStrategy::SharedTx,
            Kind::SeparateMarker => TxStrategy::SeparateTxWithMarker,
            Kind::Separate => TxStrategy::SeparateTx,
            Kind::NonTx => TxStrategy::NonTransactional,
        }
    }
}

/// In-process counters for the non-transactional target: effects are
/// immediate and survive a "crash" of the run, as a remote call's would.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<Mutex<HashMap<String, i64>>>);

impl Counter {
    fn add(&self, key: &str, n: i64) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_owned())
            .or_default() += n;
    }
    /// The value of `key`.
    pub fn get(&self, key: &str) -> i64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

const EFFECTS: &str = "effects";

/// How a test change behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behaviour {
    /// Bumps its counter.
    #[default]
    Ok,
    /// Bumps its counter, then fails.
    Fail,
    /// Bumps its counter, then panics.
    Panic,
}

/// The "already in place" check of a non-transactional test change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Check {
    /// It has none.
    #[default]
    None,
    /// It reads its counter: in place when it is at least 1.
    Reads,
    /// It fails.
    Fails,
}

/// How a non-transactional test change rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rollback {
    /// It has no rollback.
    #[default]
    None,
    /// It undoes its bump.
    Ok,
    /// Its rollback fails.
    Fail,
}

fn misbehave(b: Behaviour) -> ChangeResult {
    match b {
        Behaviour::Ok => Ok(()),
        Behaviour::Fail => Err("boom: the change failed".into()),
        Behaviour::Panic => panic!("the change panicked on purpose"),
    }
}

struct Bump<H> {
    meta: ChangeMeta,
    key: String,
    behaviour: Behaviour,
    _h: PhantomData<fn() -> H>,
}

impl<H: PipelineUnderTest> Change for Bump<H> {
    type Target = H::Target;
    fn meta(&self) -> ChangeMeta {
        self.meta.clone()
    }
    async fn apply(&self, ctx: &mut <H::Target as TargetSystem>::Context) -> ChangeResult {
        H::bump(ctx, &self.key).await?;
        misbehave(self.behaviour)
    }
}

struct Effect {
    meta: ChangeMeta,
    key: String,
    behaviour: Behaviour,
    rollback: Rollback,
    check: Check,
}

impl Change for Effect {
    type Target = DependencyTarget<Counter>;
    fn meta(&self) -> ChangeMeta {
        self.meta.clone()
    }
    async fn apply(&self, c: &mut Counter) -> ChangeResult {
        c.add(&self.key, 1);
        misbehave(self.behaviour)
    }
    async fn rollback(&self, c: &mut Counter) -> ChangeResult {
        match self.rollback {
            Rollback::None => Err(Box::new(NoRollback)),
            Rollback::Ok => {
                c.add(&self.key, -1);
                Ok(())
            }
            Rollback::Fail => Err("rollback failed too".into()),
        }
    }
    async fn is_applied(&self, c: &mut Counter) -> Result<bool, BoxError> {
        match self.check {
            Check::None => Err(Box::new(flamingock_core::NoCheck)),
            Check::Reads => Ok(c.get(&self.key) >= 1),
            Check::Fails => Err("the check could not reach the system".into()),
        }
    }
}

/// One test change.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Id (also the counter key).
    pub id: String,
    /// Order.
    pub order: String,
    /// Strategy.
    pub kind: Kind,
    /// Behaviour.
    pub behaviour: Behaviour,
    /// Rollback (non-transactional only).
    pub rollback: Rollback,
    /// Recovery strategy.
    pub recovery: RecoveryStrategy,
    /// Already-in-place check (non-transactional only).
    pub check: Check,
}

/// A change spec with defaults.
pub fn spec(id: &str, order: &str, kind: Kind) -> Spec {
    Spec {
        id: id.to_owned(),
        order: order.to_owned(),
        kind,
        behaviour: Behaviour::Ok,
        rollback: Rollback::None,
        recovery: RecoveryStrategy::ManualIntervention,
        check: Check::None,
    }
}

impl Spec {
    fn behaviour(mut self, b: Behaviour) -> Self {
        self.behaviour = b;
        self
    }
    fn rollback(mut self, r: Rollback) -> Self {
        self.rollback = r;
        self
    }
    fn recovery(mut self, r: RecoveryStrategy) -> Self {
        self.recovery = r;
        self
    }
    fn check(mut self, c: Check) -> Self {
        self.check = c;
        self
    }
}

/// One namespace of a backend, with the suite's helpers.
struct World<'s, H: PipelineUnderTest> {
    sut: &'s H,
    ns: String,
    env: PipelineEnv<H::Target>,
    counter: Counter,
}

impl<'s, H: PipelineUnderTest> World<'s, H> {
    async fn new(sut: &'s H) -> World<'s, H> {
        let ns = namespace("pipe");
        let env = sut.open(&ns).await.expect("open backend");
        World {
            sut,
            ns,
            env,
            counter: Counter::default(),
        }
    }

    fn has(&self, kind: Kind) -> bool {
        self.target(kind).is_some() || kind == Kind::NonTx
    }

    fn target(&self, kind: Kind) -> Option<&H::Target> {
        match kind {
            Kind::Shared => self.env.shared.as_ref(),
            Kind::SeparateMarker => self.env.separate_marker.as_ref(),
            Kind::Separate => self.env.separate.as_ref(),
            Kind::NonTx => None,
        }
    }

    /// The best transactional kind this backend has (else non-transactional).
    fn best_kind(&self) -> Kind {
        [Kind::Shared, Kind::SeparateMarker, Kind::Separate]
            .into_iter()
            .find(|k| self.has(*k))
            .unwrap_or(Kind::NonTx)
    }

    fn stage(&self, id: &str, specs: &[Spec]) -> Stage {
        self.stage_in(&self.env, id, specs)
    }

    fn stage_in(&self, env: &PipelineEnv<H::Target>, id: &str, specs: &[Spec]) -> Stage {
        let mut stage = Stage::new(id);
        for s in specs {
            let meta = ChangeMeta::new(&s.id)
                .order(&s.order)
                .author("suite")
                .recovery(s.recovery);
            match s.kind {
                Kind::NonTx => {
                    stage.add(Effect {
                        meta: meta.target(EFFECTS),
                        key: s.id.clone(),
                        behaviour: s.behaviour,
                        rollback: s.rollback,
                        check: s.check,
                    });
                }
                kind => {
                    let t = match kind {
                        Kind::Shared => env.shared.as_ref(),
                        Kind::SeparateMarker => env.separate_marker.as_ref(),
                        _ => env.separate.as_ref(),
                    }
                    .expect("target of this kind");
                    stage.add(Bump::<H> {
                        meta: meta.target(t.id()),
                        key: s.id.clone(),
                        behaviour: s.behaviour,
                        _h: PhantomData,
                    });
                }
            }
        }
        stage
    }

    fn lock_config(&self) -> LockConfig {
        LockConfig::default()
            .lease(self.sut.capabilities().lease)
            .retry_interval(Duration::from_millis(50))
            .acquire_timeout(Duration::from_secs(60))
    }

    fn builder_in(&self, env: &PipelineEnv<H::Target>, stages: Vec<Stage>) -> FlamingockBuilder {
        let mut b = Flamingock::builder()
            .service("suite")
            .audit_store(env.store.clone())
            .lock_provider(env.lock.clone())
            .target(DependencyTarget::new(EFFECTS, self.counter.clone()))
            .lock_config(self.lock_config());
        for t in [&env.shared, &env.separate_marker, &env.separate]
            .into_iter()
            .flatten()
        {
            b = b.target(t.clone());
        }
        for s in stages {
            b = b.stage(s);
        }
        b
    }

    fn builder(&self, stages: Vec<Stage>) -> FlamingockBuilder {
        self.builder_in(&self.env, stages)
    }

    fn runner(&self, stages: Vec<Stage>) -> Flamingock {
        self.builder(stages).build().expect("valid pipeline")
    }

    fn runner_with_fault(&self, stages: Vec<Stage>, fault: Arc<Fault>) -> Flamingock {
        self.builder(stages)
            .fault_injector(fault as Arc<dyn FaultInjector>)
            .build()
            .expect("valid pipeline")
    }

    async fn count(&self, kind: Kind, key: &str) -> i64 {
        match self.target(kind) {
            Some(t) => self.sut.count(t, key).await.expect("count") as i64,
            None => self.counter.get(key),
        }
    }

    async fn latest(&self, id: &str) -> Option<AuditEntry> {
        self.env
            .store
            .snapshot()
            .await
            .expect("snapshot")
            .into_iter()
            .find(|e| e.change_id == id)
    }

    async fn states(&self, id: &str) -> Vec<AuditState> {
        self.env
            .store
            .history(&HistoryFilter::all().change(id))
            .await
            .expect("history")
            .into_iter()
            .map(|e| e.state)
            .collect()
    }

    async fn done(self) {
        if let Err(e) = self.sut.cleanup(&self.ns).await {
            eprintln!("cleanup of {} failed: {e}", self.ns);
        }
    }
}

/// Runs a check in a fresh world and cleans up even when it panics.
async fn in_world<H, F>(sut: &H, check: F)
where
    H: PipelineUnderTest,
    F: for<'w> FnOnce(&'w World<'_, H>) -> BoxFuture<'w, ()>,
{
    let world = World::new(sut).await;
    let result =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(check(&world))).await;
    world.done().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn outcome_of<'r>(report: &'r RunReport, id: &str) -> &'r ChangeOutcome {
    &report
        .changes
        .iter()
        .find(|c| &*c.change_id == id)
        .unwrap_or_else(|| panic!("no line for {id} in {report:#?}"))
        .outcome
}

/// Changes run in order across stages; a second run takes the fast path
/// without touching the lock, even while another owner holds it.
pub async fn applies_in_order_then_fast_path<H: PipelineUnderTest>(sut: &H) {
    in_world(sut, |w| {
        Box::pin(async move {
            let k = w.best_kind();
            let stages = || {
                vec![
                    w.stage("s1", &[spec("b", "0002", k), spec("a", "0001", k)]),
                    w.stage("s2", &[spec("c", "0001", Kind::NonTx)]),
                ]
            };
            let seen = Arc::new(Mutex::new(Vec::new()));
            let seen2 = seen.clone();
            let runner = w
                .builder(stages())
                .listener(move |e: &Event| {
                    seen2
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(e.clone())
                })
                .build()
                .expect("build");
            let report = runner.run().await.expect("first run");
            assert_eq!(report.applied(), ["a", "b", "c"], "{report}");
            assert!(report.took_lock);
            for id in ["a", "b"] {
                assert_eq!(w.count(k, id).await, 1, "{id} applied once");
                let e = w.latest(id).await.expect("audited");
                assert_eq!(e.state, AuditState::Applied);
                assert_eq!(e.tx_strategy, k.strategy());
                assert_eq!(Some(e.fencing_token), report.fencing_token);
                assert!(
                    e.runner_id.starts_with("suite@"),
                    "runner id {}",
                    e.runner_id
                );
            }
            assert_eq!(w.count(Kind::NonTx, "c").await, 1);
            let events = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let started: Vec<String> = events
                .iter()
                .filter_map(|e| match e {
                    Event::ChangeStarted { change_id } => Some(change_id.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(started, ["a", "b", "c"]);
            assert!(matches!(
                events.first(),
                Some(Event::PipelineStarted { .. })
            ));
            assert!(matches!(
                events.last(),
                Some(Event::PipelineCompleted { applied: 3, .. })
            ));
            assert!(events
                .iter()
                .any(|e| matches!(e, Event::StageCompleted { stage } if stage == "s2")));

            // Second start: fast path, zero lock calls.
            let counting = CountingLock::new(w.env.lock.clone());
            let calls = counting.counter();
            let again = w
                .builder(stages())
                .lock_provider(counting)
                .build()
                .expect("build")
                .run()
                .await
                .expect("second run");
            assert!(!again.took_lock);
            assert_eq!(again.totals().skipped, 3);
            assert_eq!(
                calls.load(Ordering::SeqCst),
                0,
                "the fast path must not touch the lock"
            );

            // ... even while another owner holds the lock.
            let held = match w
                .env
                .lock
                .try_acquire("someone-else", Duration::from_secs(30))
                .await
            {
                Ok(flamingock_core::Acquire::Acquired(l)) => l,
                other => panic!("acquire: {other:?}"),
            };
            let third = tokio::time::timeout(Duration::from_secs(5), w.runner(stages()).run())
                .await
                .expect("the fast path does not wait for the lock")
                .expect("third run");
            assert_eq!(third.totals().skipped, 3);
            w.env
                .lock
                .release("someone-else", held.token)
                .await
                .expect("release");
            for id in ["a", "b"] {
                assert_eq!(w.count(k, id).await, 1, "{id} still applied once");
            }
        })
    })
    .await;
}

/// N runners (separate connections) start at once, repeatedly: every
/// change's effect is observed exactly once, every time.
pub async fn exactly_once_concurrent_runners<H: PipelineUnderTest>(sut: &H) {
    let caps = sut.capabilities();
    for rep in 0..caps.repetitions {
        in_world(sut, |w| {
            Box::pin(async move {
                let mut kinds = vec![w.best_kind(), Kind::NonTx];
                kinds.extend(
                    [Kind::SeparateMarker, Kind::Separate]
                        .into_iter()
                        .filter(|k| w.has(*k)),
                );
                let specs: Vec<Spec> = (0..6)
                    .map(|i| spec(&format!("c{i}"), &format!("{i:04}"), kinds[i % kinds.len()]))
                    .collect();
                let mut runs = Vec::new();
                for _ in 0..caps.runners {
                    let env = w.sut.open(&w.ns).await.expect("open");
                    let stages = vec![
                        w.stage_in(&env, "one", &specs[..3]),
                        w.stage_in(&env, "two", &specs[3..]),
                    ];
                    let runner = w.builder_in(&env, stages).build().expect("build");
                    // Separate tasks on the multi-threaded runtime: real interleaving.
                    runs.push(tokio::spawn(async move { runner.run().await }));
                }
                let results: Vec<_> = futures::future::join_all(runs)
                    .await
                    .into_iter()
                    .map(|r| r.expect("runner task"))
                    .collect();
                let mut applied = 0;
                for r in &results {
                    match r {
                        Ok(report) => applied += report.totals().applied,
                        Err(e) => panic!("rep {rep}: a runner failed: {e}"),
                    }
                }
                assert_eq!(applied, specs.len(), "rep {rep}: applied across runners");
                for s in &specs {
                    assert_eq!(
                        w.count(s.kind, &s.id).await,
                        1,
                        "rep {rep}: effect of {} ({:?})",
                        s.id,
                        s.kind
                    );
                    let applied_entries = w
                        .states(&s.id)
                        .await
                        .into_iter()
                        .filter(|st| *st == AuditState::Applied)
                        .count();
                    assert_eq!(
                        applied_entries, 1,
                        "rep {rep}: one APPLIED entry for {}",
                        s.id
                    );
                }
            })
        })
        .await;
    }
}

/// What the next run must find after a crash at a fault point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Applied(i64),
    Skipped(i64),
    Recovered(i64),
    Blocked(i64),
}

fn expected(kind: Kind, point: FaultPoint, recovery: RecoveryStrategy, check: Check) -> Expect {
    use Expect::*;
    use FaultPoint::*;
    let retry = recovery == RecoveryStrategy::AlwaysRetry;
    match (kind, point) {
        (_, BeforeStart) => Applied(1),
        (_, AfterApplied) => Skipped(1),
        // The check finds the effect in place: recorded applied, never run twice.
        (Kind::NonTx, _) if check == Check::Reads => Recovered(1),
        (Kind::Shared, BeforeCommit) | (Kind::SeparateMarker, BeforeCommit) => Applied(1),
        (Kind::Shared, AfterCommit) => Skipped(1),
        (Kind::SeparateMarker, AfterCommit) => Recovered(1),
        // The transaction never committed: nothing in place; retry applies once.
        (Kind::Separate, BeforeCommit) if retry => Applied(1),
        (Kind::Separate, BeforeCommit) => Blocked(0),
        // Effect in place, outcome unknown to the audit: retry applies again.
        (Kind::Separate | Kind::NonTx, _) if retry => Applied(2),
        (Kind::Separate | Kind::NonTx, _) => Blocked(1),
    }
}

async fn crash_cells<H: PipelineUnderTest>(sut: &H, kind: Kind) {
    crash_cells_with(sut, kind, Check::None).await;
}

async fn crash_cells_with<H: PipelineUnderTest>(sut: &H, kind: Kind, check: Check) {
    for point in [
        FaultPoint::BeforeStart,
        FaultPoint::BeforeCommit,
        FaultPoint::AfterCommit,
        FaultPoint::AfterApplied,
    ] {
        for recovery in [
            RecoveryStrategy::ManualIntervention,
            RecoveryStrategy::AlwaysRetry,
        ] {
            in_world(sut, |w| {
                Box::pin(async move {
                    assert!(
                        w.has(kind),
                        "this backend has no {kind:?} target: list the check under `ignored:` \
                         in pipeline_tests! with the reason, so it shows as ignored"
                    );
                    let cell = format!("{kind:?} / crash {point:?} / {recovery:?}");
                    let stages = || {
                        vec![w.stage(
                            "s",
                            &[
                                spec("c", "0001", kind).recovery(recovery).check(check),
                                spec("d", "0002", kind),
                            ],
                        )]
                    };
                    let fault = Fault::new(point, "c", FaultAction::Crash);
                    crash_at(w.runner_with_fault(stages(), fault.clone()).run(), &fault).await;
                    // The crashed runner's lease runs out; the next runner goes on.
                    let next = w.runner(stages()).run().await;
                    let want = expected(kind, point, recovery, check);
                    let got_count = w.count(kind, "c").await;
                    match (want, &next) {
                        (Expect::Applied(n), Ok(r)) => {
                            assert_eq!(outcome_of(r, "c"), &ChangeOutcome::Applied, "{cell}");
                            assert_eq!(got_count, n, "{cell}: effect count");
                        }
                        (Expect::Skipped(n), Ok(r)) => {
                            assert_eq!(outcome_of(r, "c"), &ChangeOutcome::Skipped, "{cell}");
                            assert_eq!(got_count, n, "{cell}: effect count");
                        }
                        (Expect::Recovered(n), Ok(r)) => {
                            assert_eq!(
                                outcome_of(r, "c"),
                                &ChangeOutcome::RecoveredApplied,
                                "{cell}"
                            );
                            assert_eq!(got_count, n, "{cell}: effect count");
                        }
                        (Expect::Blocked(n), Err(Error::Blocked { blocked, report })) => {
                            assert_eq!(blocked.len(), 1, "{cell}");
                            assert_eq!(blocked[0].change_id, "c");
                            assert_eq!(blocked[0].state, AuditState::Started, "{cell}");
                            assert!(
                                blocked[0].resolution.contains("flamingock audit fix c"),
                                "{cell}"
                            );
                            assert_eq!(outcome_of(report, "d"), &ChangeOutcome::NotRun, "{cell}");
                            assert_eq!(
                                w.count(kind, "d").await,
                                0,
                                "{cell}: the blocked stage ran nothing"
                            );
                            assert_eq!(got_count, n, "{cell}: effect count");
                            return;
                        }
                        (want, got) => panic!("{cell}: expected {want:?}, got {got:?}"),
                    }
                    assert_eq!(
                        w.count(kind, "d").await,
                        1,
                        "{cell}: the next change ran once"
                    );
                    let latest = w.latest("c").await.expect("audited");
                    assert_eq!(latest.state, AuditState::Applied, "{cell}");
                })
            })
            .await;
        }
    }
}

/// Crash table, shared-transaction column: every crash is re-applied once or skipped.
pub async fn crash_table_shared_tx<H: PipelineUnderTest>(sut: &H) {
    crash_cells(sut, Kind::Shared).await;
}

/// Crash table, separate transaction with marker: the marker resolves a crash after commit.
pub async fn crash_table_separate_tx_with_marker<H: PipelineUnderTest>(sut: &H) {
    crash_cells(sut, Kind::SeparateMarker).await;
}

/// Crash table, separate transaction: blocked (or retried) when the outcome is unknown.
pub async fn crash_table_separate_tx<H: PipelineUnderTest>(sut: &H) {
    crash_cells(sut, Kind::Separate).await;
}

/// Crash table, non-transactional: blocked (or retried) once started.
pub async fn crash_table_non_transactional<H: PipelineUnderTest>(sut: &H) {
    crash_cells(sut, Kind::NonTx).await;
}

/// Crash table, non-transactional with an already-in-place check: wherever
/// the plain column blocks (or retries and applies twice), the check finds
/// the effect in place and the change is recorded applied, exactly once.
pub async fn crash_table_non_transactional_with_check<H: PipelineUnderTest>(sut: &H) {
    crash_cells_with(sut, Kind::NonTx, Check::Reads).await;
}

/// A failed non-transactional change with an already-in-place check: in
/// place → recorded applied (resolved by check) and not run again; not in
/// place → recorded rolled back and applied again; the check failing → the
/// change blocks, naming the check's error.
pub async fn failing_non_transactional_resolved_by_check<H: PipelineUnderTest>(sut: &H) {
    for (check, undone) in [
        (Check::Reads, false),
        (Check::Reads, true),
        (Check::Fails, false),
    ] {
        in_world(sut, |w| {
            Box::pin(async move {
                let nt = Kind::NonTx;
                let case = format!("check {check:?}, effect undone: {undone}");
                let failing = [spec("c", "0001", nt)
                    .behaviour(Behaviour::Fail)
                    .check(check)];
                let out = w.runner(vec![w.stage("s", &failing)]).run().await;
                assert!(
                    matches!(out, Err(Error::ChangeFailed { .. })),
                    "{case}: {out:?}"
                );
                if undone {
                    // Someone undid the partial effect by hand.
                    w.counter.add("c", -1);
                }
                let fixed = [spec("c", "0001", nt).check(check), spec("d", "0002", nt)];
                let next = w.runner(vec![w.stage("s", &fixed)]).run().await;
                match (check, undone, &next) {
                    (Check::Reads, false, Ok(r)) => {
                        assert_eq!(
                            outcome_of(r, "c"),
                            &ChangeOutcome::RecoveredApplied,
                            "{case}"
                        );
                        let latest = w.latest("c").await.expect("audited");
                        assert_eq!(latest.state, AuditState::Applied, "{case}");
                        assert_eq!(latest.metadata["resolved_by_check"], true, "{case}");
                        assert_eq!(latest.metadata["previous_state"], "FAILED", "{case}");
                        assert_eq!(
                            w.states("c").await,
                            [AuditState::Started, AuditState::Failed, AuditState::Applied],
                            "{case}"
                        );
                    }
                    (Check::Reads, true, Ok(r)) => {
                        assert_eq!(outcome_of(r, "c"), &ChangeOutcome::Applied, "{case}");
                        assert_eq!(
                            w.states("c").await,
                            [
                                AuditState::Started,
                                AuditState::Failed,
                                AuditState::RolledBack,
                                AuditState::Started,
                                AuditState::Applied
                            ],
                            "{case}"
                        );
                    }
                    (Check::Fails, _, Err(Error::Blocked { blocked, .. })) => {
                        assert_eq!(blocked.len(), 1, "{case}");
                        assert!(
                            blocked[0].reason.contains("check failed"),
                            "{case}: {}",
                            blocked[0].reason
                        );
                        assert!(
                            blocked[0].reason.contains("could not reach the system"),
                            "{case}: {}",
                            blocked[0].reason
                        );
                        assert_eq!(w.count(nt, "d").await, 0, "{case}");
                        return;
                    }
                    (_, _, other) => panic!("{case}: unexpected {other:?}"),
                }
                assert_eq!(w.count(nt, "c").await, 1, "{case}: applied exactly once");
                assert_eq!(w.count(nt, "d").await, 1, "{case}");
            })
        })
        .await;
    }
}

/// A failing change in a transaction of `kind` leaves nothing, is recorded
/// FAILED then ROLLED_BACK with its error, and is applied on the next run.
async fn failing_in_a_transaction<H: PipelineUnderTest>(sut: &H, kind: Kind) {
    in_world(sut, |w| {
        Box::pin(async move {
            assert!(
                w.has(kind),
                "this backend has no {kind:?} target: list the check under `ignored:` \
                     in pipeline_tests! with the reason, so it shows as ignored"
            );
            let fail = [
                spec("c", "0001", kind).behaviour(Behaviour::Fail),
                spec("d", "0002", kind),
            ];
            match w.runner(vec![w.stage("s", &fail)]).run().await {
                Err(Error::ChangeFailed { failure, report }) => {
                    assert_eq!(failure.change_id, "c");
                    assert!(failure.chain().to_string().contains("boom"), "{failure}");
                    assert!(matches!(
                        outcome_of(&report, "c"),
                        ChangeOutcome::Failed {
                            rolled_back: true,
                            ..
                        }
                    ));
                    assert_eq!(outcome_of(&report, "d"), &ChangeOutcome::NotRun);
                }
                other => panic!("{kind:?}: expected ChangeFailed, got {other:?}"),
            }
            assert_eq!(
                w.count(kind, "c").await,
                0,
                "{kind:?}: the transaction was rolled back"
            );
            assert_eq!(w.count(kind, "d").await, 0);
            let states = w.states("c").await;
            assert_eq!(
                &states[states.len() - 2..],
                [AuditState::Failed, AuditState::RolledBack],
                "{kind:?}"
            );
            let failed = w
                .env
                .store
                .history(&HistoryFilter::all().change("c"))
                .await
                .expect("history")
                .into_iter()
                .find(|e| e.state == AuditState::Failed)
                .expect("FAILED entry");
            assert!(failed
                .error
                .expect("error recorded")
                .message
                .contains("boom"));
            let ok = [spec("c", "0001", kind), spec("d", "0002", kind)];
            let r = w
                .runner(vec![w.stage("s", &ok)])
                .run()
                .await
                .expect("fixed run");
            assert_eq!(r.applied(), ["c", "d"]);
            assert_eq!(w.count(kind, "c").await, 1);
        })
    })
    .await;
}

/// A failing change in the shared transaction leaves nothing and is applied on the next run.
pub async fn failing_shared_tx_rolls_back<H: PipelineUnderTest>(sut: &H) {
    failing_in_a_transaction(sut, Kind::Shared).await;
}

/// A failing change in a separate transaction with marker leaves nothing and
/// is applied on the next run.
pub async fn failing_separate_tx_with_marker_rolls_back<H: PipelineUnderTest>(sut: &H) {
    failing_in_a_transaction(sut, Kind::SeparateMarker).await;
}

/// A failing change in a separate transaction leaves nothing and is applied
/// on the next run.
pub async fn failing_separate_tx_rolls_back<H: PipelineUnderTest>(sut: &H) {
    failing_in_a_transaction(sut, Kind::Separate).await;
}

/// A failing non-transactional change follows its rollback and its recovery
/// strategy: recorded FAILED, ROLLED_BACK or ROLLBACK_FAILED, and blocked or
/// retried on the next run as the decision table says.
pub async fn failing_non_transactional_follows_its_rollback<H: PipelineUnderTest>(sut: &H) {
    for (rollback, recovery, expect_state, expect_count, rerun_blocked) in [
        (
            Rollback::None,
            RecoveryStrategy::ManualIntervention,
            AuditState::Failed,
            1,
            true,
        ),
        (
            Rollback::None,
            RecoveryStrategy::AlwaysRetry,
            AuditState::Failed,
            1,
            false,
        ),
        (
            Rollback::Ok,
            RecoveryStrategy::ManualIntervention,
            AuditState::RolledBack,
            0,
            false,
        ),
        (
            Rollback::Fail,
            RecoveryStrategy::ManualIntervention,
            AuditState::RollbackFailed,
            1,
            true,
        ),
    ] {
        in_world(sut, |w| Box::pin(async move {
            let case = format!("non-tx rollback {rollback:?} / {recovery:?}");
            let failing = spec("c", "0001", Kind::NonTx)
                .behaviour(Behaviour::Fail)
                .rollback(rollback)
                .recovery(recovery);
            let err = w.runner(vec![w.stage("s", std::slice::from_ref(&failing))]).run().await;
            match &err {
                Err(Error::ChangeFailed { report, .. }) => assert!(
                    matches!(outcome_of(report, "c"), ChangeOutcome::Failed { rolled_back, .. } if *rolled_back == (rollback == Rollback::Ok)),
                    "{case}: {report}"
                ),
                other => panic!("{case}: expected ChangeFailed, got {other:?}"),
            }
            assert_eq!(w.latest("c").await.expect("audited").state, expect_state, "{case}");
            assert_eq!(w.count(Kind::NonTx, "c").await, expect_count, "{case}");
            let fixed = Spec { behaviour: Behaviour::Ok, ..failing };
            let rerun = w.runner(vec![w.stage("s", &[fixed])]).run().await;
            if rerun_blocked {
                match rerun {
                    Err(Error::Blocked { blocked, .. }) => {
                        assert_eq!(blocked[0].change_id, "c");
                        assert_eq!(blocked[0].state, expect_state, "{case}");
                        assert!(blocked[0].error.as_deref().unwrap_or("").contains(
                            if expect_state == AuditState::RollbackFailed { "rollback failed" } else { "boom" }
                        ), "{case}: {:?}", blocked[0].error);
                    }
                    other => panic!("{case}: expected Blocked, got {other:?}"),
                }
                assert_eq!(w.count(Kind::NonTx, "c").await, expect_count, "{case}: not re-run");
            } else {
                assert_eq!(rerun.expect("rerun").applied(), ["c"], "{case}");
                assert_eq!(w.count(Kind::NonTx, "c").await, expect_count + 1, "{case}");
            }
        }))
        .await;
    }
}

/// A panicking change is recorded as failed and the lock is still released.
pub async fn panicking_change_releases_lock<H: PipelineUnderTest>(sut: &H) {
    in_world(sut, |w| {
        Box::pin(async move {
            let k = w.best_kind();
            // The default panic hook runs in the panicking change, inside its
            // transaction, and with RUST_BACKTRACE=1 symbolises a large debug
            // binary for seconds: on a single-writer store (SQLite) the lease
            // cannot be refreshed meanwhile and runs out, which is not what
            // this check is about. The message alone is printed instead.
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
            let r =
                w.runner(vec![
                    w.stage("s", &[spec("p", "0001", k).behaviour(Behaviour::Panic)])
                ])
                .run()
                .await;
            std::panic::set_hook(hook);
            match r {
                Err(Error::ChangeFailed { failure, .. }) => {
                    assert!(
                        failure.chain().to_string().contains("panicked"),
                        "{failure}"
                    )
                }
                other => panic!("expected ChangeFailed, got {other:?}"),
            }
            let held = w.env.lock.inspect().await.expect("inspect");
            assert!(
                held.is_none() || held.is_some_and(|h| h.expired),
                "lock released after a panic"
            );
            let states = w.states("p").await;
            assert!(states.contains(&AuditState::Failed), "{states:?}");
            assert_eq!(w.count(k, "p").await, if k == Kind::NonTx { 1 } else { 0 });
        })
    })
    .await;
}

/// A runner whose lease was lost mid-change cannot commit it; the next
/// runner completes the work exactly once.
pub async fn lost_lease_cannot_commit<H: PipelineUnderTest>(sut: &H) {
    in_world(sut, |w| {
        Box::pin(async move {
            let kind = if w.has(Kind::Shared) {
                Kind::Shared
            } else if w.has(Kind::SeparateMarker) {
                Kind::SeparateMarker
            } else {
                panic!(
                    "this backend has no transactional target: list lost_lease_cannot_commit \
                     under `ignored:` in pipeline_tests! with the reason, so it shows as ignored"
                );
            };
            let stages = || vec![w.stage("s", &[spec("c", "0001", kind)])];
            // Pause A inside its transaction, where only the fence can stop
            // it. A single-writer store (SQLite) lets nobody else write while
            // that transaction is open, not even a force release: there A is
            // paused just before its change instead.
            let point = if w.sut.capabilities().single_writer {
                FaultPoint::BeforeStart
            } else {
                FaultPoint::BeforeCommit
            };
            let fault = Fault::new(point, "c", FaultAction::Pause);
            let a = w.runner_with_fault(stages(), fault.clone());
            let a_run = tokio::spawn(async move { a.run().await });
            fault.reached().await;
            let a_fence = w.env.store.fence().await.expect("fence");
            // An operator (or an expiry) takes the lock away from A, and B
            // starts: another process, with connections of its own.
            w.env.lock.force_release().await.expect("force release");
            let env_b = w.sut.open(&w.ns).await.expect("open B's handles");
            let b = w
                .builder_in(
                    &env_b,
                    vec![w.stage_in(&env_b, "s", &[spec("c", "0001", kind)])],
                )
                .build()
                .expect("valid pipeline");
            let b_run = tokio::spawn(async move { b.run().await });
            // B claims an epoch above A's. (B's change may then wait
            // on A's row locks: that is the database's job.)
            let mut raised = false;
            for _ in 0..200 {
                if w.env.store.fence().await.expect("fence") > a_fence {
                    raised = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(raised, "runner B must claim the fence while A is paused");
            fault.resume();
            let a_result = a_run.await.expect("join A");
            let b_result = b_run.await.expect("join B");
            assert!(
                matches!(a_result, Err(Error::LeaseLost { .. })),
                "A went on after B claimed the fence: {a_result:?}"
            );
            assert_eq!(b_result.expect("runner B").applied(), ["c"]);
            assert_eq!(w.count(kind, "c").await, 1, "exactly one effect");
            let applied = w
                .states("c")
                .await
                .into_iter()
                .filter(|s| *s == AuditState::Applied)
                .count();
            assert_eq!(applied, 1, "exactly one APPLIED entry");
        })
    })
    .await;
}

/// A blocked change blocks its stage; the error lists every blocked change
/// with its state, error and the command that resolves it. Earlier stages run.
pub async fn blocked_stages_report_every_blocked_change<H: PipelineUnderTest>(sut: &H) {
    in_world(sut, |w| {
        Box::pin(async move {
            let k = w.best_kind();
            let first = vec![
                w.stage("s1", &[spec("a", "0001", k)]),
                w.stage(
                    "s2",
                    &[spec("b", "0001", Kind::NonTx).behaviour(Behaviour::Fail)],
                ),
            ];
            assert!(matches!(
                w.runner(first).run().await,
                Err(Error::ChangeFailed { .. })
            ));
            // A crashed non-transactional change, as an earlier run left it.
            let fence = w.env.store.fence().await.expect("fence");
            let mut started = AuditEntry::new("e", AuditState::Started, fence)
                .strategy(TxStrategy::NonTransactional)
                .run("crashed-run");
            started.stage_id = "s3".into();
            started.target_system = EFFECTS.into();
            w.env.store.append(&started).await.expect("append");

            let stages = || {
                vec![
                    w.stage("s1", &[spec("a", "0001", k), spec("a2", "0002", k)]),
                    w.stage(
                        "s2",
                        &[
                            spec("b", "0001", Kind::NonTx),
                            spec("c", "0002", Kind::NonTx),
                        ],
                    ),
                    w.stage(
                        "s3",
                        &[
                            spec("e", "0001", Kind::NonTx),
                            spec("f", "0002", Kind::NonTx),
                        ],
                    ),
                ]
            };
            match w.runner(stages()).run().await {
                Err(err @ Error::Blocked { .. }) => {
                    let text = err.chain().to_string();
                    let Error::Blocked { blocked, report } = err else {
                        unreachable!()
                    };
                    let ids: Vec<&str> = blocked.iter().map(|b| b.change_id.as_str()).collect();
                    assert_eq!(ids, ["b", "e"], "every blocked change is listed");
                    assert_eq!(blocked[0].state, AuditState::Failed);
                    assert!(blocked[0].error.as_deref().unwrap_or("").contains("boom"));
                    assert_eq!(blocked[1].state, AuditState::Started);
                    for id in ["b", "e"] {
                        assert!(
                            text.contains(&format!(
                                "flamingock audit fix {id} --resolution applied"
                            )),
                            "{text}"
                        );
                    }
                    assert_eq!(outcome_of(&report, "a"), &ChangeOutcome::Skipped);
                    assert_eq!(
                        outcome_of(&report, "a2"),
                        &ChangeOutcome::Applied,
                        "earlier stage ran"
                    );
                    assert!(matches!(
                        outcome_of(&report, "b"),
                        ChangeOutcome::Blocked { .. }
                    ));
                    assert_eq!(outcome_of(&report, "c"), &ChangeOutcome::NotRun);
                    assert_eq!(outcome_of(&report, "f"), &ChangeOutcome::NotRun);
                }
                other => panic!("expected Blocked, got {other:?}"),
            }
            assert_eq!(w.count(Kind::NonTx, "c").await, 0);
            let issues = w.runner(stages()).issues().await.expect("issues");
            let ids: Vec<&str> = issues.iter().map(|b| b.change_id.as_str()).collect();
            assert_eq!(ids, ["b", "e"]);
            let plan = w.runner(stages()).plan().await.expect("plan");
            assert!(plan
                .iter()
                .any(|p| p.change_id == "b" && matches!(p.action, PlanAction::Block { .. })));

            // ---- fix operations ----
            let ops = w.runner(stages());
            let fixed = ops
                .mark_applied("b", "verified by hand")
                .await
                .expect("mark b applied");
            assert_eq!(fixed.state, AuditState::ManualMarkedAsApplied);
            assert_eq!(fixed.metadata["reason"], "verified by hand");
            ops.mark_rolled_back("e", "nothing was done")
                .await
                .expect("mark e rolled back");
            assert!(matches!(
                ops.mark_applied("b", "again").await,
                Err(Error::NothingToFix { .. })
            ));
            assert!(matches!(
                ops.mark_applied("zzz", "unknown").await,
                Err(Error::UnknownChange { .. })
            ));
            assert!(ops.issues().await.expect("issues").is_empty());
            let r = w.runner(stages()).run().await.expect("run after fixes");
            assert_eq!(outcome_of(&r, "b"), &ChangeOutcome::Skipped);
            assert_eq!(r.applied(), ["c", "e", "f"]);
            assert_eq!(w.count(Kind::NonTx, "b").await, 1, "b is not re-run");
            assert_eq!(w.count(Kind::NonTx, "e").await, 1);
        })
    })
    .await;
}

/// Fixes take the lock: while another owner holds it they wait, then fail.
pub async fn fix_takes_the_lock<H: PipelineUnderTest>(sut: &H) {
    in_world(sut, |w| {
        Box::pin(async move {
            let stage = || {
                vec![w.stage(
                    "s",
                    &[spec("b", "0001", Kind::NonTx).behaviour(Behaviour::Fail)],
                )]
            };
            assert!(w.runner(stage()).run().await.is_err());
            let held = match w
                .env
                .lock
                .try_acquire("other", Duration::from_secs(30))
                .await
            {
                Ok(flamingock_core::Acquire::Acquired(l)) => l,
                other => panic!("{other:?}"),
            };
            let ops = w
                .builder(stage())
                .lock_config(
                    w.lock_config()
                        .acquire_timeout(Duration::from_millis(400))
                        .retry_interval(Duration::from_millis(100)),
                )
                .build()
                .expect("build");
            match ops.mark_applied("b", "x").await {
                Err(Error::Lock(LockError::Timeout { holder, .. })) => {
                    assert_eq!(holder.owner, "other")
                }
                other => panic!("expected lock timeout, got {other:?}"),
            }
            assert_eq!(
                w.latest("b").await.expect("audited").state,
                AuditState::Failed,
                "nothing written"
            );
            w.env
                .lock
                .release("other", held.token)
                .await
                .expect("release");
            ops.mark_applied("b", "x").await.expect("fix after release");
        })
    })
    .await;
}

/// validate-only applies nothing and reports what is pending.
pub async fn validate_only_applies_nothing<H: PipelineUnderTest>(sut: &H) {
    in_world(sut, |w| {
        Box::pin(async move {
            let k = w.best_kind();
            let stages =
                || vec![w.stage("s", &[spec("a", "0001", k), spec("b", "0002", Kind::NonTx)])];
            let counting = CountingLock::new(w.env.lock.clone());
            let calls = counting.counter();
            let check = w
                .builder(stages())
                .lock_provider(counting)
                .validate_only(true)
                .build()
                .expect("build");
            match check.run().await {
                Err(Error::Pending { pending }) => assert_eq!(pending, ["a", "b"]),
                other => panic!("expected Pending, got {other:?}"),
            }
            assert!(matches!(
                w.runner(stages()).validate().await,
                Err(Error::Pending { .. })
            ));
            assert_eq!(
                calls.load(Ordering::SeqCst),
                0,
                "validate-only takes no lock"
            );
            assert_eq!(w.count(k, "a").await, 0);
            assert_eq!(w.count(Kind::NonTx, "b").await, 0);
            assert!(w.env.store.snapshot().await.expect("snapshot").is_empty());
            w.runner(stages()).run().await.expect("real run");
            check.run().await.expect("nothing pending any more");
            w.runner(stages()).validate().await.expect("validate ok");
        })
    })
    .await;
}

/// Audit entries for changes no longer in code: an error by default, a warning on request.
pub async fn orphan_audit_entries<H: PipelineUnderTest>(sut: &H) {
    in_world(sut, |w| {
        Box::pin(async move {
            let k = w.best_kind();
            w.runner(vec![
                w.stage("s", &[spec("a", "0001", k), spec("gone", "0002", k)])
            ])
            .run()
            .await
            .expect("first run");
            let only_a = || vec![w.stage("s", &[spec("a", "0001", k), spec("new", "0003", k)])];
            match w.runner(only_a()).run().await {
                Err(Error::Validation(v)) => assert_eq!(
                    v.problems,
                    [ValidationProblem::OrphanAudit {
                        change_ids: vec!["gone".into()]
                    }]
                ),
                other => panic!("expected an orphan validation error, got {other:?}"),
            }
            assert_eq!(w.count(k, "new").await, 0, "nothing ran");
            let r = w
                .builder(only_a())
                .orphans(OrphanPolicy::Warn)
                .build()
                .expect("build")
                .run()
                .await
                .expect("warn policy runs");
            assert_eq!(r.applied(), ["new"]);
        })
    })
    .await;
}

/// `plan` lists every change in order with its strategy and action.
pub async fn plan_lists_strategies<H: PipelineUnderTest>(sut: &H) {
    in_world(sut, |w| {
        Box::pin(async move {
            let kinds: Vec<Kind> = [
                Kind::Shared,
                Kind::SeparateMarker,
                Kind::Separate,
                Kind::NonTx,
            ]
            .into_iter()
            .filter(|k| w.has(*k))
            .collect();
            let specs: Vec<Spec> = kinds
                .iter()
                .enumerate()
                .map(|(i, k)| spec(&format!("c{i}"), &format!("{i:04}"), *k))
                .collect();
            let runner = w.runner(vec![w.stage("s", &specs)]);
            let plan = runner.plan().await.expect("plan");
            assert_eq!(plan.len(), specs.len());
            for (p, s) in plan.iter().zip(&specs) {
                assert_eq!(p.change_id, s.id);
                assert_eq!(p.strategy, s.kind.strategy(), "{}", s.id);
                assert_eq!(p.action, PlanAction::Apply);
            }
            runner.run().await.expect("run");
            assert!(runner
                .plan()
                .await
                .expect("plan")
                .iter()
                .all(|p| p.action == PlanAction::Skip));
        })
    })
    .await;
}

/// Looking never writes: on a namespace where nothing ever ran, every
/// read-only operation answers (no entries, everything pending, nobody holds
/// the lock) and leaves no trace in the backend. The run that follows
/// creates the store, which shows that the footprint can see it.
pub async fn reading_creates_nothing<H: PipelineUnderTest>(sut: &H) {
    in_world(sut, |w| {
        Box::pin(async move {
            let specs = [
                spec("a", "0001", w.best_kind()),
                spec("b", "0002", Kind::NonTx),
            ];
            let runner = w.runner(vec![w.stage("s", &specs)]);
            assert!(runner.snapshot().await.expect("snapshot").is_empty());
            assert!(runner
                .history(&HistoryFilter::all())
                .await
                .expect("history")
                .is_empty());
            assert!(runner
                .history(&HistoryFilter::all().change("a"))
                .await
                .expect("history of one change")
                .is_empty());
            assert!(runner.issues().await.expect("issues").is_empty());
            let plan = runner.plan().await.expect("plan");
            assert_eq!(plan.len(), 2);
            assert!(
                plan.iter().all(|p| p.action == PlanAction::Apply),
                "everything is pending on an empty store: {plan:?}"
            );
            match runner.validate().await {
                Err(Error::Pending { .. }) => {}
                other => panic!("validate of a pipeline with pending changes: {other:?}"),
            }
            assert!(runner.lock_status().await.expect("lock status").is_none());
            assert_eq!(w.env.store.fence().await.expect("fence"), 0);
            assert!(w.env.lock.inspect().await.expect("inspect").is_none());
            let left = w.sut.footprint(&w.ns).await.expect("footprint");
            assert!(
                left.is_empty(),
                "read-only operations created or wrote: {left:?}"
            );

            runner.run().await.expect("run");
            assert_eq!(w.count(w.best_kind(), "a").await, 1);
            let after = w.sut.footprint(&w.ns).await.expect("footprint");
            assert!(
                !after.is_empty(),
                "the footprint shows nothing after a run: it cannot see what reading would create"
            );
        })
    })
    .await;
}

/// Expands to one `#[tokio::test]` per pipeline check. Takes the path of an
/// `async fn() -> Option<impl PipelineUnderTest>`.
/// Expands to one `#[tokio::test]` per pipeline check. A backend to which
/// some checks do not apply lists the ones that run and, with their reason,
/// the ones that show as ignored (a check that does not apply never counts
/// as passed; run anyway, it fails saying so):
///
/// ```ignore
/// flamingock_test_support::pipeline_tests!(sut);
/// flamingock_test_support::pipeline_tests!(sut,
///     run: [applies_in_order_then_fast_path, crash_table_non_transactional],
///     ignored: [crash_table_shared_tx = "no shared-transaction target on this server"],
/// );
/// ```
#[macro_export]
macro_rules! pipeline_tests {
    ($sut:path) => {
        $crate::__suite_tests!($sut, pipeline_suite: [
            applies_in_order_then_fast_path,
            exactly_once_concurrent_runners,
            crash_table_shared_tx,
            crash_table_separate_tx_with_marker,
            crash_table_separate_tx,
            crash_table_non_transactional,
            crash_table_non_transactional_with_check,
            failing_shared_tx_rolls_back,
            failing_separate_tx_with_marker_rolls_back,
            failing_separate_tx_rolls_back,
            failing_non_transactional_follows_its_rollback,
            failing_non_transactional_resolved_by_check,
            panicking_change_releases_lock,
            lost_lease_cannot_commit,
            blocked_stages_report_every_blocked_change,
            fix_takes_the_lock,
            validate_only_applies_nothing,
            orphan_audit_entries,
            plan_lists_strategies,
            reading_creates_nothing,
        ]);
    };
    ($sut:path, run: [$($check:ident),* $(,)?], ignored: [$($skip:ident = $why:literal),* $(,)?] $(,)?) => {
        $crate::__suite_tests!($sut, pipeline_suite: [$($check),*]);
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[ignore = $why]
            async fn $skip() {
                let sut = $sut()
                    .await
                    .expect("the backend under test is unavailable: a check never passes without running");
                $crate::pipeline_suite::$skip(&sut).await;
            }
        )*
    };
}
