//! The RabbitMQ target against a real broker (`FLAMINGOCK_TEST_RABBITMQ_URL`),
//! with a SQLite audit store: declarations applied once, a queue that
//! exists with other arguments, a crash settled by the already-in-place
//! check, an unreachable broker and wrong credentials. Every queue and
//! exchange is named after a fresh namespace and deleted at the end.

use flamingock_core::error::ErrorChain as _;
use std::sync::Arc;

use flamingock_core::fault::{FaultInjector, FaultPoint};
use flamingock_core::{
    AuditState, BoxError, Change, ChangeMeta, ChangeOutcome, ChangeResult, ContextMode, Error,
    Flamingock, HistoryFilter, LockConfig, Stage, TargetSystem,
};
use flamingock_rabbitmq::{ExchangeKind, QueueSpec, RabbitContext, RabbitError, RabbitTarget};
use flamingock_sqlite::SqliteAuditStore;
use flamingock_test_support::faults::{crash_at, Fault, FaultAction};

fn url() -> String {
    flamingock_test_support::require_service(&flamingock_test_support::services::RABBITMQ)
}

/// Declares an exchange, a queue with arguments and a binding; its check
/// looks for both.
struct Topology {
    id: &'static str,
    exchange: String,
    queue: QueueSpec,
}

impl Change for Topology {
    type Target = RabbitTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(self.id).order("0001").author("suite")
    }
    async fn apply(&self, mq: &mut RabbitContext) -> ChangeResult {
        mq.declare_exchange(&self.exchange, ExchangeKind::Topic)
            .await?;
        mq.declare_queue(&self.queue).await?;
        mq.bind_queue(self.queue.name(), &self.exchange, "order.*")
            .await?;
        Ok(())
    }
    async fn is_applied(&self, mq: &mut RabbitContext) -> Result<bool, BoxError> {
        Ok(mq.queue_exists(self.queue.name()).await? && mq.exchange_exists(&self.exchange).await?)
    }
}

struct World {
    ns: String,
    target: RabbitTarget,
    store: SqliteAuditStore,
}

impl World {
    async fn new() -> World {
        let ns = flamingock_test_support::namespace("mq");
        World {
            target: RabbitTarget::builder("broker", url())
                .build()
                .await
                .expect("target"),
            store: SqliteAuditStore::connect("sqlite::memory:")
                .await
                .expect("store"),
            ns,
        }
    }
    fn name(&self, what: &str) -> String {
        format!("{}.{what}", self.ns)
    }
    fn topology(&self, max_length: i64) -> Topology {
        Topology {
            id: "orders-topology",
            exchange: self.name("orders"),
            queue: QueueSpec::durable(self.name("created")).max_length(max_length),
        }
    }
    fn runner(&self, change: Topology, fault: Option<Arc<Fault>>) -> Flamingock {
        let mut b = Flamingock::builder()
            .audit_store(self.store.clone())
            .target(self.target.clone())
            .lock_config(LockConfig::default().lease(std::time::Duration::from_secs(1)))
            .stage(Stage::new("mq").change(change));
        if let Some(f) = fault {
            b = b.fault_injector(f as Arc<dyn FaultInjector>);
        }
        b.build().expect("runner")
    }
    async fn ctx(&self) -> RabbitContext {
        self.target
            .begin(ContextMode::NonTransactional)
            .await
            .expect("channel")
    }
    async fn cleanup(self) {
        let mut mq = self.ctx().await;
        mq.delete_queue(&self.name("created"))
            .await
            .expect("delete queue");
        mq.delete_exchange(&self.name("orders"))
            .await
            .expect("delete exchange");
    }
}

#[tokio::test]
async fn declarations_are_applied_once_and_found_in_place() {
    let w = World::new().await;
    let report = w.runner(w.topology(10), None).run().await.expect("run");
    assert_eq!(report.applied(), vec!["orders-topology"]);
    let mut mq = w.ctx().await;
    assert!(mq.queue_exists(&w.name("created")).await.expect("look"));
    assert!(mq.exchange_exists(&w.name("orders")).await.expect("look"));
    assert!(!mq.queue_exists(&w.name("nothing")).await.expect("look"));
    // Declaring again as it is changes nothing.
    mq.declare_queue(&QueueSpec::durable(w.name("created")).max_length(10))
        .await
        .expect("same declaration");
    let again = w
        .runner(w.topology(10), None)
        .run()
        .await
        .expect("second run");
    assert!(again.applied().is_empty());
    w.cleanup().await;
}

#[tokio::test]
async fn a_queue_with_other_arguments_is_a_clear_error_and_is_left_alone() {
    let w = World::new().await;
    let mut mq = w.ctx().await;
    mq.declare_queue(&QueueSpec::durable(w.name("created")).max_length(5))
        .await
        .expect("the queue as it is on the broker");
    let err = w
        .runner(w.topology(10), None)
        .run()
        .await
        .expect_err("refused");
    let text = err.chain().to_string();
    assert!(matches!(err, Error::ChangeFailed { .. }), "{err:?}");
    assert!(
        text.contains(&format!("queue '{}'", w.name("created"))),
        "{text}"
    );
    assert!(text.contains("x-max-length=10"), "our arguments: {text}");
    assert!(
        text.contains("x-max-length") && text.contains('5'),
        "the broker's: {text}"
    );
    // Nothing was redeclared: the queue keeps its arguments.
    mq.declare_queue(&QueueSpec::durable(w.name("created")).max_length(5))
        .await
        .expect("still as it was");
    match mq
        .declare_queue(&QueueSpec::durable(w.name("created")).max_length(10))
        .await
    {
        Err(RabbitError::Mismatch { asked, .. }) => assert!(asked.contains("x-max-length=10")),
        other => panic!("expected a mismatch, got {other:?}"),
    }
    // The failure is recorded, with its error.
    let history = w.store_history().await;
    assert_eq!(history.last().map(|e| e.0), Some(AuditState::Failed));
    w.cleanup().await;
}

impl World {
    async fn store_history(&self) -> Vec<(AuditState, Option<String>)> {
        use flamingock_core::AuditStore;
        self.store
            .history(&HistoryFilter::all().change("orders-topology"))
            .await
            .expect("history")
            .into_iter()
            .map(|e| (e.state, e.error.map(|x| x.message)))
            .collect()
    }
}

#[tokio::test]
async fn a_crash_after_the_declarations_is_settled_by_the_check() {
    let w = World::new().await;
    let fault = Fault::new(
        FaultPoint::AfterCommit,
        "orders-topology",
        FaultAction::Crash,
    );
    crash_at(w.runner(w.topology(10), Some(fault.clone())).run(), &fault).await;
    // STARTED, outcome unknown: without a check this would block for an operator.
    assert_eq!(
        w.store_history().await.last().map(|e| e.0),
        Some(AuditState::Started)
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await; // the lease ends
    let report = w
        .runner(w.topology(10), None)
        .run()
        .await
        .expect("next run");
    let line = report
        .changes
        .iter()
        .find(|c| c.change_id.as_ref() == "orders-topology")
        .expect("reported");
    assert_eq!(line.outcome, ChangeOutcome::RecoveredApplied);
    let states: Vec<AuditState> = w.store_history().await.into_iter().map(|e| e.0).collect();
    assert_eq!(states, [AuditState::Started, AuditState::Applied]);
    w.cleanup().await;
}

#[tokio::test]
async fn unreachable_broker_and_wrong_credentials_are_clear_errors() {
    let target = RabbitTarget::builder("broker", "amqp://guest:hunter2@127.0.0.1:1/%2f")
        .build()
        .await
        .expect("no I/O at build");
    let err = target
        .begin(ContextMode::NonTransactional)
        .await
        .expect_err("unreachable");
    let text = format!("{err} {err:?}");
    assert!(text.contains("connect to the broker"), "{text}");
    assert!(text.contains("guest:***@127.0.0.1:1"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let good = url();
    let bad = good.replacen("guest:guest@", "guest:wrong-password@", 1);
    assert_ne!(good, bad, "the test URL has guest:guest credentials");
    let target = RabbitTarget::builder("broker", bad)
        .build()
        .await
        .expect("target");
    let err = target
        .begin(ContextMode::NonTransactional)
        .await
        .expect_err("refused");
    let text = err.chain().to_string();
    assert!(text.contains("connect to the broker"), "{text}");
    assert!(!text.contains("wrong-password"), "{text}");
    let err = RabbitTarget::builder("broker", "http://127.0.0.1:5672")
        .build()
        .await
        .expect_err("not amqp");
    assert!(
        err.chain().to_string().contains("not an amqp:// URI"),
        "{err}"
    );
}
