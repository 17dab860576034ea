//! Multi-step changes in real processes: a runner SIGKILLed inside a step,
//! before or after the step's effect, and the next runner resuming (the
//! step's check says where) or blocking with the position saved.
//!
//! The steps change a system outside any transaction, as a broker or a cloud
//! API would be changed: one file per step in a directory the parent gives,
//! a line per time the step's effect was applied. The audit store and the
//! lock are the backend's own.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use flamingock_core::{
    AuditState, BoxError, Change, ChangeMeta, ChangeResult, DependencyTarget, HistoryFilter,
    NoCheck,
};

use flamingock_core::fault::FaultPoint;

use super::{
    change_id, killed_where_it_stops, out, point_name, run_to_end, ChildSpec, EXIT_BLOCKED,
};
use crate::namespace;
use crate::pipeline_suite::{Kind, PipelineUnderTest};

/// Number of steps of each change; set: the child runs multi-step changes.
pub(super) const STEPS: &str = "FLAMINGOCK_PROCESS_STEPS";
/// `1`: every step has a check (is its file there?).
pub(super) const STEP_CHECKS: &str = "FLAMINGOCK_PROCESS_STEP_CHECKS";
/// `<begin|end>:<change>:<step>`: where the child stops until told to go on.
pub(super) const STOP_STEP: &str = "FLAMINGOCK_PROCESS_STOP_STEP";
/// The directory of the steps' effects.
pub(super) const EFFECTS_DIR: &str = "FLAMINGOCK_PROCESS_EFFECTS_DIR";

/// The id of the target the steps change.
pub(super) const TARGET: &str = "step-effects";

/// Where inside a step a child stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPoint {
    /// Before the step's effect (the previous step is recorded done).
    Begin,
    /// After the step's effect, before the runner records the step done.
    End,
}

impl StepPoint {
    pub(super) fn name(self) -> &'static str {
        match self {
            StepPoint::Begin => "begin",
            StepPoint::End => "end",
        }
    }
    fn from_name(s: &str) -> Option<StepPoint> {
        [StepPoint::Begin, StepPoint::End]
            .into_iter()
            .find(|p| p.name() == s)
    }
}

/// The system the steps change: a line in `<dir>/<change>.step<N>` per
/// application of step N.
#[derive(Debug, Clone)]
pub(super) struct Effects {
    dir: PathBuf,
}

impl Effects {
    pub(super) fn new(dir: PathBuf) -> Effects {
        Effects { dir }
    }
    fn file(&self, change: &str, step: usize) -> PathBuf {
        self.dir.join(format!("{change}.step{step}"))
    }
    fn add(&self, change: &str, step: usize) -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file(change, step))?;
        f.write_all(b"applied\n")?;
        f.sync_all()
    }
    /// How many times step `step` of `change` was applied.
    pub(super) fn count(&self, change: &str, step: usize) -> u64 {
        std::fs::read_to_string(self.file(change, step))
            .map(|s| s.lines().count() as u64)
            .unwrap_or(0)
    }
}

/// A change of `steps` steps, each writing its line.
pub(super) struct Stepped {
    id: String,
    steps: usize,
    checks: bool,
    stop: Option<(StepPoint, usize)>,
}

impl Stepped {
    async fn maybe_stop(&self, point: StepPoint, step: usize) -> Result<(), BoxError> {
        if self.stop == Some((point, step)) {
            out(&format!("AT step-{} {} {step}", point.name(), self.id));
            tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                let _ = std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line);
            })
            .await?;
        }
        Ok(())
    }
}

impl Change for Stepped {
    type Target = DependencyTarget<Effects>;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(&self.id)
            .order(&self.id)
            .author("process-suite")
            .target(TARGET)
    }
    fn steps(&self) -> Vec<String> {
        (0..self.steps).map(|i| format!("step{i}")).collect()
    }
    /// With no steps: a plain non-transactional change whose effect is
    /// "step 0"; with steps: the steps in order (the transactional path).
    async fn apply(&self, fx: &mut Effects) -> ChangeResult {
        if self.steps == 0 {
            fx.add(&self.id, 0)?;
            return Ok(());
        }
        for i in 0..self.steps {
            self.apply_step(fx, i).await?;
        }
        Ok(())
    }
    async fn is_applied(&self, fx: &mut Effects) -> Result<bool, BoxError> {
        if self.steps > 0 || !self.checks {
            return Err(Box::new(NoCheck));
        }
        Ok(fx.count(&self.id, 0) >= 1)
    }
    async fn apply_step(&self, fx: &mut Effects, step: usize) -> ChangeResult {
        self.maybe_stop(StepPoint::Begin, step).await?;
        fx.add(&self.id, step)?;
        self.maybe_stop(StepPoint::End, step).await?;
        Ok(())
    }
    async fn is_step_done(&self, fx: &mut Effects, step: usize) -> Result<bool, BoxError> {
        if !self.checks {
            return Err(Box::new(NoCheck));
        }
        Ok(fx.count(&self.id, step) >= 1)
    }
}

/// The child's changes when [`STEPS`] is set; `None` otherwise.
pub(super) fn child_changes(n: usize) -> Result<Option<(Vec<Stepped>, Effects)>, BoxError> {
    let Ok(steps) = std::env::var(STEPS) else {
        return Ok(None);
    };
    let steps: usize = steps.parse().map_err(|_| format!("bad {STEPS}"))?;
    let checks = std::env::var(STEP_CHECKS).as_deref() == Ok("1");
    let dir = std::env::var(EFFECTS_DIR).map_err(|_| format!("{EFFECTS_DIR} is not set"))?;
    let stop = match std::env::var(STOP_STEP) {
        Ok(s) => {
            let mut parts = s.splitn(3, ':');
            let (Some(p), Some(c), Some(k)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("{STOP_STEP} is <begin|end>:<change>:<step>").into());
            };
            let p = StepPoint::from_name(p).ok_or("unknown step point")?;
            let k: usize = k.parse().map_err(|_| format!("bad step in {STOP_STEP}"))?;
            Some((p, c.to_owned(), k))
        }
        Err(_) => None,
    };
    let changes = (0..n)
        .map(|i| {
            let id = change_id(i);
            Stepped {
                stop: stop
                    .as_ref()
                    .filter(|(_, c, _)| *c == id)
                    .map(|(p, _, k)| (*p, *k)),
                id,
                steps,
                checks,
            }
        })
        .collect();
    Ok(Some((changes, Effects::new(PathBuf::from(dir)))))
}

/// Three changes of three steps, the runner SIGKILLed inside the middle
/// step of the middle change, before and after that step's effect, with
/// and without step checks. The next runner (a new process):
///
/// * with checks: asks the check of the step the killed run was in, applies
///   it only when it is not in place, and goes on; every step of every
///   change is in place exactly once;
/// * without checks: blocks, since the step may have been cut anywhere;
///   the saved position says the first step is done (a STARTED entry with
///   `steps_done = 1`), the step's effect is what the kill left, and the
///   third change has not run.
pub async fn multi_step_killed_between_steps<H: PipelineUnderTest>(sut: &H) {
    const CHANGES: usize = 3;
    const STEPS_EACH: usize = 3;
    let short = sut.capabilities().lease;
    for checks in [true, false] {
        for point in [StepPoint::Begin, StepPoint::End] {
            let ns = namespace("steps");
            let dir = std::env::temp_dir().join(format!("flamingock-{ns}"));
            std::fs::create_dir_all(&dir).expect("create the effects directory");
            let fx = Effects::new(dir.clone());
            let cell = format!(
                "killed at the {} of step 2 of c02, {}",
                point.name(),
                if checks {
                    "with checks"
                } else {
                    "without checks"
                }
            );
            let spec = ChildSpec::new(&ns, Kind::NonTx, CHANGES)
                .lease(short)
                .steps(STEPS_EACH, checks, &dir)
                .stop_in_step(point, 1, 1);
            killed_where_it_stops(spec, &cell).await;
            let after = run_to_end(
                ChildSpec::new(&ns, Kind::NonTx, CHANGES).steps(STEPS_EACH, checks, &dir),
            )
            .await;
            let counts: Vec<Vec<u64>> = (0..CHANGES)
                .map(|c| {
                    (0..STEPS_EACH)
                        .map(|s| fx.count(&change_id(c), s))
                        .collect()
                })
                .collect();
            if checks {
                after.expect_code(&cell, 0);
                assert_eq!(
                    counts,
                    vec![vec![1; STEPS_EACH]; CHANGES],
                    "{cell}: every step exactly once"
                );
            } else {
                after.expect_code(&cell, EXIT_BLOCKED);
                let middle = match point {
                    StepPoint::Begin => vec![1, 0, 0],
                    StepPoint::End => vec![1, 1, 0],
                };
                assert_eq!(
                    counts,
                    vec![vec![1, 1, 1], middle, vec![0, 0, 0]],
                    "{cell}: blocked where the kill left it"
                );
                let env = sut.open(&ns).await.expect("open backend");
                let history = env
                    .store
                    .history(&HistoryFilter::all().change("c02"))
                    .await
                    .expect("history");
                let last = history.last().expect("c02 has entries");
                assert_eq!(last.state, AuditState::Started, "{cell}: {history:?}");
                assert_eq!(
                    last.metadata
                        .get("steps_done")
                        .and_then(serde_json::Value::as_u64),
                    Some(1),
                    "{cell}: the saved position is one step done: {history:?}"
                );
            }
            assert!(
                after.elapsed < short + Duration::from_secs(60),
                "{cell}: the next runner took {:?}",
                after.elapsed
            );
            let _ = sut.cleanup(&ns).await;
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Three plain non-transactional changes (no steps) on a system outside
/// any transaction, the runner SIGKILLed at each fault point of the middle
/// one, with and without an "already in place" check. The next runner (a
/// new process) finds the crash table's outcome: after the effect and
/// before APPLIED (`BeforeCommit`), the check settles it (recorded APPLIED
/// by the check, the effect once) or, without a check, the stage blocks
/// with the effect as the kill left it; at the other points every change
/// takes effect exactly once.
pub async fn non_transactional_killed_with_and_without_check<H: PipelineUnderTest>(sut: &H) {
    const CHANGES: usize = 3;
    let short = sut.capabilities().lease;
    for checks in [true, false] {
        for point in [
            FaultPoint::BeforeStart,
            FaultPoint::BeforeCommit,
            FaultPoint::AfterApplied,
        ] {
            let ns = namespace("nontx");
            let dir = std::env::temp_dir().join(format!("flamingock-{ns}"));
            std::fs::create_dir_all(&dir).expect("create the effects directory");
            let fx = Effects::new(dir.clone());
            let cell = format!(
                "killed at {} of c02, {}",
                point_name(point),
                if checks {
                    "with a check"
                } else {
                    "without a check"
                }
            );
            let spec = ChildSpec::new(&ns, Kind::NonTx, CHANGES)
                .lease(short)
                .steps(0, checks, &dir)
                .stop_at(point, 1);
            killed_where_it_stops(spec, &cell).await;
            let after =
                run_to_end(ChildSpec::new(&ns, Kind::NonTx, CHANGES).steps(0, checks, &dir)).await;
            let counts: Vec<u64> = (0..CHANGES).map(|c| fx.count(&change_id(c), 0)).collect();
            let env = sut.open(&ns).await.expect("open backend");
            let history = env
                .store
                .history(&HistoryFilter::all().change("c02"))
                .await
                .expect("history");
            if point == FaultPoint::BeforeCommit && !checks {
                after.expect_code(&cell, EXIT_BLOCKED);
                assert_eq!(counts, [1, 1, 0], "{cell}: blocked as the kill left it");
                assert_eq!(
                    history.last().map(|e| e.state),
                    Some(AuditState::Started),
                    "{cell}: {history:?}"
                );
            } else {
                after.expect_code(&cell, 0);
                assert_eq!(counts, [1, 1, 1], "{cell}: every change exactly once");
                let applied: Vec<_> = history
                    .iter()
                    .filter(|e| e.state == AuditState::Applied)
                    .collect();
                assert_eq!(applied.len(), 1, "{cell}: one APPLIED entry: {history:?}");
                if point == FaultPoint::BeforeCommit {
                    assert_eq!(
                        applied[0].metadata.get("resolved_by_check"),
                        Some(&serde_json::Value::Bool(true)),
                        "{cell}: settled by the check: {history:?}"
                    );
                }
            }
            assert!(
                after.elapsed < short + Duration::from_secs(60),
                "{cell}: the next runner took {:?}",
                after.elapsed
            );
            let _ = sut.cleanup(&ns).await;
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
