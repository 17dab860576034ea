//! Multi-step changes outside a transaction: progress saved after each step,
//! a crash resumed at the first unfinished step (asking that step's check),
//! a step without check blocking with its position, and a failing step
//! undoing the completed ones in reverse order.

use flamingock_core::error::ErrorChain as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flamingock_core::memory::InMemoryAuditStore;
use flamingock_core::{
    AuditState, BoxError, Change, ChangeMeta, ChangeResult, DependencyTarget, Error, Flamingock,
    HistoryFilter, LockConfig, NoCheck, NoRollback, Stage,
};

/// The system the steps change: step name → how many times it is in place,
/// and the order of rollbacks.
#[derive(Clone, Default)]
struct System {
    applied: Arc<Mutex<HashMap<String, i64>>>,
    undone: Arc<Mutex<Vec<usize>>>,
}

impl System {
    fn count(&self, step: &str) -> i64 {
        self.applied
            .lock()
            .expect("lock")
            .get(step)
            .copied()
            .unwrap_or(0)
    }
    fn bump(&self, step: &str, by: i64) {
        *self
            .applied
            .lock()
            .expect("lock")
            .entry(step.into())
            .or_default() += by;
    }
}

const STEPS: [&str; 3] = ["exchange", "queue", "binding"];

/// How the test change behaves.
#[derive(Clone, Default)]
struct Plan {
    /// Step that hangs (the run is then dropped: a crash), once.
    hang_at: Option<usize>,
    /// Whether the hanging step applies its effect before hanging.
    hang_after_effect: bool,
    hung: Arc<AtomicBool>,
    /// Step that fails.
    fail_at: Option<usize>,
    /// Steps with a check.
    checks: bool,
    /// Steps with a rollback.
    rollbacks: bool,
}

struct Topology {
    plan: Plan,
}

impl Change for Topology {
    type Target = DependencyTarget<System>;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("topology").order("0001")
    }
    fn steps(&self) -> Vec<String> {
        STEPS.iter().map(|s| (*s).to_owned()).collect()
    }
    async fn apply_step(&self, sys: &mut System, step: usize) -> ChangeResult {
        let hang = self.plan.hang_at == Some(step) && !self.plan.hung.swap(true, Ordering::SeqCst);
        if hang && !self.plan.hang_after_effect {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        sys.bump(STEPS[step], 1);
        if hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if self.plan.fail_at == Some(step) {
            return Err(format!("{} refused", STEPS[step]).into());
        }
        Ok(())
    }
    async fn rollback_step(&self, sys: &mut System, step: usize) -> ChangeResult {
        if !self.plan.rollbacks {
            return Err(Box::new(NoRollback));
        }
        if sys.count(STEPS[step]) > 0 {
            sys.bump(STEPS[step], -1);
        }
        sys.undone.lock().expect("lock").push(step);
        Ok(())
    }
    async fn is_step_done(&self, sys: &mut System, step: usize) -> Result<bool, BoxError> {
        if !self.plan.checks {
            return Err(Box::new(NoCheck));
        }
        Ok(sys.count(STEPS[step]) >= 1)
    }
}

struct World {
    store: InMemoryAuditStore,
    sys: System,
}

impl World {
    fn new() -> World {
        World {
            store: InMemoryAuditStore::new(),
            sys: System::default(),
        }
    }
    fn runner(&self, plan: Plan) -> Flamingock {
        Flamingock::builder()
            .audit_store(self.store.clone())
            .target(DependencyTarget::new("broker", self.sys.clone()))
            .lock_config(LockConfig::default().lease(Duration::from_millis(600)))
            .stage(Stage::new("s").change(Topology { plan }))
            .build()
            .expect("runner")
    }
    /// Runs until the hanging step, then drops the run (a crash) and lets its lease end.
    async fn crash(&self, plan: Plan) {
        let cut = tokio::time::timeout(Duration::from_millis(300), self.runner(plan).run()).await;
        assert!(cut.is_err(), "the run was cut in its hanging step");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    async fn history(&self) -> Vec<(AuditState, Option<u64>)> {
        self.runner(Plan::default())
            .history(&HistoryFilter::all().change("topology"))
            .await
            .expect("history")
            .into_iter()
            .map(|e| {
                (
                    e.state,
                    e.metadata.get("steps_done").and_then(|v| v.as_u64()),
                )
            })
            .collect()
    }
    fn counts(&self) -> Vec<i64> {
        STEPS.iter().map(|s| self.sys.count(s)).collect()
    }
}

#[tokio::test]
async fn progress_is_saved_after_each_step() {
    let w = World::new();
    w.runner(Plan::default()).run().await.expect("run");
    assert_eq!(w.counts(), [1, 1, 1]);
    assert_eq!(
        w.history().await,
        [
            (AuditState::Started, Some(0)),
            (AuditState::Started, Some(1)),
            (AuditState::Started, Some(2)),
            (AuditState::Applied, Some(3)),
        ]
    );
}

#[tokio::test]
async fn a_crash_resumes_at_the_first_unfinished_step() {
    let w = World::new();
    let plan = Plan {
        hang_at: Some(1),
        checks: true,
        ..Plan::default()
    };
    w.crash(plan.clone()).await;
    assert_eq!(
        w.counts(),
        [1, 0, 0],
        "cut inside step 2, before its effect"
    );
    w.runner(plan).run().await.expect("resumed");
    assert_eq!(w.counts(), [1, 1, 1], "step 1 not applied again");
    let h = w.history().await;
    assert_eq!(h.last(), Some(&(AuditState::Applied, Some(3))));
    assert!(h.contains(&(AuditState::Started, Some(1))), "{h:?}");
}

#[tokio::test]
async fn a_step_found_in_place_by_its_check_is_not_applied_again() {
    let w = World::new();
    let plan = Plan {
        hang_at: Some(1),
        hang_after_effect: true,
        checks: true,
        ..Plan::default()
    };
    w.crash(plan.clone()).await;
    assert_eq!(w.counts(), [1, 1, 0], "cut inside step 2, after its effect");
    w.runner(plan).run().await.expect("resumed");
    assert_eq!(w.counts(), [1, 1, 1], "each step exactly once");
}

#[tokio::test]
async fn a_crash_in_a_step_without_check_blocks_naming_the_step() {
    let w = World::new();
    let plan = Plan {
        hang_at: Some(1),
        hang_after_effect: true,
        ..Plan::default()
    };
    w.crash(plan.clone()).await;
    match w.runner(plan.clone()).run().await {
        Err(Error::Blocked { blocked, .. }) => {
            let reason = &blocked[0].reason;
            assert!(reason.contains("step 2 of 3 (queue)"), "{reason}");
            assert!(reason.contains("has no check"), "{reason}");
            assert!(reason.contains("steps done: 1 of 3"), "{reason}");
        }
        other => panic!("expected a block, got {other:?}"),
    }
    // Operators see the position too.
    let issues = w.runner(plan).issues().await.expect("issues");
    assert!(
        issues[0]
            .reason
            .contains("steps done: 1 of 3 (next: queue)"),
        "{}",
        issues[0].reason
    );
    assert_eq!(w.counts(), [1, 1, 0], "nothing ran again");
}

#[tokio::test]
async fn a_failing_step_undoes_the_completed_ones_in_reverse_order() {
    let w = World::new();
    let plan = Plan {
        fail_at: Some(2),
        rollbacks: true,
        ..Plan::default()
    };
    let err = w.runner(plan).run().await.expect_err("fails");
    assert!(
        err.chain()
            .to_string()
            .contains("step 3 of 3 (binding): binding refused"),
        "{err}"
    );
    assert_eq!(*w.sys.undone.lock().expect("lock"), [2, 1, 0]);
    assert_eq!(w.counts(), [0, 0, 0]);
    let h = w.history().await;
    assert_eq!(h[h.len() - 2], (AuditState::Failed, Some(2)));
    assert_eq!(h[h.len() - 1], (AuditState::RolledBack, Some(0)));
    // Rolled back: the next run applies it from the start.
    w.runner(Plan::default()).run().await.expect("applied");
    assert_eq!(w.counts(), [1, 1, 1]);
}

#[tokio::test]
async fn a_failing_step_without_rollback_stays_failed_with_its_position() {
    let w = World::new();
    let plan = Plan {
        fail_at: Some(1),
        ..Plan::default()
    };
    w.runner(plan.clone()).run().await.expect_err("fails");
    match w.runner(plan).run().await {
        Err(Error::Blocked { blocked, .. }) => {
            assert_eq!(blocked[0].state, AuditState::Failed);
            assert!(
                blocked[0]
                    .reason
                    .contains("steps done: 1 of 3 (failed: queue)"),
                "{}",
                blocked[0].reason
            );
        }
        other => panic!("expected a block, got {other:?}"),
    }
}
