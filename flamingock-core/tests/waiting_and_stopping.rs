//! Nothing waits without a bound or without saying so, and a run stops
//! cleanly when asked: deadlines on store operations, the lock wait (its
//! events, its early end when another runner did the work) and
//! `run_until`.

use flamingock_core::error::ErrorChain as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
use flamingock_core::{
    async_trait, AuditEntry, AuditState, AuditStore, Change, ChangeMeta, ChangeResult, Error,
    Event, Flamingock, HistoryFilter, LockConfig, LockProvider, Stage, StoreError, Timeouts,
};

struct Put {
    id: &'static str,
    order: &'static str,
    pause: Duration,
}

impl Change for Put {
    type Target = InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(self.id).order(self.order)
    }
    async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
        tx.incr(self.id);
        tokio::time::sleep(self.pause).await;
        Ok(())
    }
}

fn put(id: &'static str, order: &'static str) -> Put {
    Put {
        id,
        order,
        pause: Duration::ZERO,
    }
}

/// An audit store whose snapshot never answers (a server blocked by a
/// killed runner's transaction, a network that drops packets).
struct Silent(InMemoryAuditStore);

#[async_trait]
impl AuditStore for Silent {
    fn describe(&self) -> String {
        "silent".into()
    }
    fn store_id(&self) -> &str {
        self.0.store_id()
    }
    async fn prepare(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn claim_fence(&self) -> Result<u64, StoreError> {
        self.0.claim_fence().await
    }
    async fn fence(&self) -> Result<u64, StoreError> {
        self.0.fence().await
    }
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.0.append(entry).await
    }
    async fn snapshot(&self) -> Result<Vec<AuditEntry>, StoreError> {
        std::future::pending().await
    }
    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.0.history(filter).await
    }
    fn default_lock(&self) -> Option<Arc<dyn LockProvider>> {
        self.0.default_lock()
    }
    fn stall_hint(&self) -> Option<String> {
        Some("look for the stalled thing".into())
    }
}

#[tokio::test]
async fn a_store_that_never_answers_ends_the_run_at_the_operation_deadline() {
    let store = InMemoryAuditStore::new();
    let runner = Flamingock::builder()
        .audit_store(Silent(store.clone()))
        .target(store.shared_target("db"))
        .stage(Stage::new("s").change(put("a", "0001")))
        .timeouts(Timeouts::default().operation(Duration::from_millis(200)))
        .build()
        .expect("build");
    let started = Instant::now();
    let err = runner.run().await.expect_err("the snapshot never answers");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    match &err {
        Error::Store(StoreError::Unresponsive {
            operation, hint, ..
        }) => {
            assert_eq!(*operation, "read the snapshot");
            assert_eq!(hint.as_deref(), Some("look for the stalled thing"));
        }
        other => panic!("expected Unresponsive, got {other:?}"),
    }
    let text = err.chain().to_string();
    assert!(text.contains("did not answer within 200 ms"), "{text}");
    assert!(text.contains("look for the stalled thing"), "{text}");
}

#[tokio::test]
async fn a_change_past_its_time_limit_fails_and_is_rolled_back() {
    let store = InMemoryAuditStore::new();
    let target = store.shared_target("db");
    let runner = Flamingock::builder()
        .audit_store(store.clone())
        .target(target.clone())
        .stage(Stage::new("s").change(Put {
            id: "slow",
            order: "0001",
            pause: Duration::from_secs(60),
        }))
        .change_timeout(Duration::from_millis(100))
        .build()
        .expect("build");
    let err = runner.run().await.expect_err("past its limit");
    assert!(
        err.chain()
            .to_string()
            .contains("did not finish within the change time limit of 100 ms"),
        "{err}"
    );
    assert_eq!(target.get("slow"), None, "rolled back");
    let states: Vec<AuditState> = store
        .history(&HistoryFilter::all())
        .await
        .expect("history")
        .into_iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(states, [AuditState::Failed, AuditState::RolledBack]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_reports_the_holder_and_stops_waiting_once_the_work_is_done() {
    let store = InMemoryAuditStore::new();
    let build = |events: Arc<Mutex<Vec<Event>>>, pause: Duration| {
        Flamingock::builder()
            .audit_store(store.clone())
            .target(store.shared_target("db"))
            .stage(Stage::new("s").change(Put {
                id: "a",
                order: "0001",
                pause,
            }))
            .lock_config(LockConfig::default().report_every(Duration::from_millis(100)))
            .listener(move |e: &Event| events.lock().expect("events").push(e.clone()))
            .build()
            .expect("build")
    };
    let first_events = Arc::new(Mutex::new(Vec::new()));
    let first = build(first_events.clone(), Duration::from_millis(600));
    let holder = tokio::spawn(async move { first.run().await });
    // Let the first runner take the lock and start its change.
    for _ in 0..100 {
        if first_events
            .lock()
            .expect("events")
            .iter()
            .any(|e| matches!(e, Event::ChangeStarted { .. }))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events = Arc::new(Mutex::new(Vec::new()));
    let waiter = build(events.clone(), Duration::ZERO);
    let started = Instant::now();
    let report = waiter.run().await.expect("the waiter finds the work done");
    assert!(!report.took_lock, "it never needed the lock");
    assert_eq!(report.totals().skipped, 1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    holder.await.expect("join").expect("holder");
    let events = events.lock().expect("events");
    let waits: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::LockWaiting { .. }))
        .collect();
    assert!(
        waits.len() >= 2,
        "a wait is reported at once and then again: {events:?}"
    );
    match waits[0] {
        Event::LockWaiting { holder, .. } => assert!(holder.starts_with("flamingock@"), "{holder}"),
        _ => unreachable!(),
    }
    let first = first_events.lock().expect("events");
    assert!(first
        .iter()
        .any(|e| matches!(e, Event::LockAcquired { .. })));
    assert!(first
        .iter()
        .any(|e| matches!(e, Event::LockReleased { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_rolls_back_the_current_change_releases_the_lock_and_says_what_is_next() {
    let store = InMemoryAuditStore::new();
    let target = store.shared_target("db");
    let runner = Flamingock::builder()
        .audit_store(store.clone())
        .target(target.clone())
        .stage(
            Stage::new("s")
                .change(put("first", "0001"))
                .change(Put {
                    id: "slow",
                    order: "0002",
                    pause: Duration::from_secs(60),
                })
                .change(put("last", "0003")),
        )
        .build()
        .expect("build");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = {
        let runner = runner.clone();
        tokio::spawn(async move {
            runner
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    stop.send(()).expect("stop");
    let err = run.await.expect("join").expect_err("interrupted");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
    match &err {
        Error::Interrupted { detail, report, .. } => {
            assert!(detail.contains("next run applies 'slow'"), "{detail}");
            assert_eq!(report.applied(), ["first"]);
        }
        other => panic!("expected Interrupted, got {other:?}"),
    }
    assert_eq!(target.get("first").as_deref(), Some("1"));
    assert_eq!(target.get("slow"), None, "rolled back");
    assert_eq!(target.get("last"), None, "not started");
    assert!(store
        .lock()
        .inspect()
        .await
        .expect("inspect")
        .is_none_or(|l| l.expired));
    // The next run finishes the work.
    let again = Flamingock::builder()
        .audit_store(store.clone())
        .target(target.clone())
        .stage(
            Stage::new("s")
                .change(put("first", "0001"))
                .change(put("slow", "0002"))
                .change(put("last", "0003")),
        )
        .build()
        .expect("build")
        .run()
        .await
        .expect("next run");
    assert_eq!(again.applied(), ["slow", "last"]);
}
