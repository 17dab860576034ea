//! The Kafka target against a real broker (`FLAMINGOCK_TEST_KAFKA_URL`, or a
//! container with the `flamingock-test-support/testcontainers` feature and
//! Docker), with a SQLite audit store: a topic declared once, a topic that
//! exists with another partition count, a crash settled by the
//! already-in-place check, a failure rolled back. Topics are named after a
//! fresh namespace and deleted at the end.
//!
//! No broker runs where this project's CI runs, so the checks that need one
//! are ignored there with that reason: `cargo test -p flamingock-kafka --
//! --ignored` runs them. The checks that need no broker always run.

use flamingock_core::error::ErrorChain as _;
use std::sync::Arc;
use std::time::Duration;

use flamingock_core::fault::{FaultInjector, FaultPoint};
use flamingock_core::{
    AuditState, AuditStore, BoxError, Change, ChangeMeta, ChangeOutcome, ChangeResult, ContextMode,
    Error, Flamingock, HistoryFilter, LockConfig, Stage, TargetSystem,
};
use flamingock_kafka::{KafkaContext, KafkaError, KafkaTarget, TopicSpec};
use flamingock_sqlite::SqliteAuditStore;
use flamingock_test_support::faults::{crash_at, Fault, FaultAction};

fn bootstrap() -> String {
    flamingock_test_support::require_service(&flamingock_test_support::services::KAFKA)
}

struct Orders {
    topic: String,
    partitions: i32,
    fail_after: bool,
}

impl Change for Orders {
    type Target = KafkaTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("orders-topic")
            .order("0001")
            .author("suite")
    }
    async fn apply(&self, kafka: &mut KafkaContext) -> ChangeResult {
        kafka
            .declare_topic(&TopicSpec::new(&self.topic, self.partitions))
            .await?;
        if self.fail_after {
            return Err("refused after the topic was made".into());
        }
        Ok(())
    }
    async fn rollback(&self, kafka: &mut KafkaContext) -> ChangeResult {
        kafka.delete_topic(&self.topic).await?;
        Ok(())
    }
    async fn is_applied(&self, kafka: &mut KafkaContext) -> Result<bool, BoxError> {
        Ok(kafka.topic_exists(&self.topic).await?)
    }
}

struct World {
    topic: String,
    target: KafkaTarget,
    store: SqliteAuditStore,
}

impl World {
    async fn new() -> World {
        World {
            topic: flamingock_test_support::namespace("topic"),
            target: KafkaTarget::builder("events", [bootstrap()])
                .timeout(Duration::from_secs(20))
                .build()
                .await
                .expect("target"),
            store: SqliteAuditStore::connect("sqlite::memory:")
                .await
                .expect("store"),
        }
    }
    fn change(&self, partitions: i32) -> Orders {
        Orders {
            topic: self.topic.clone(),
            partitions,
            fail_after: false,
        }
    }
    fn runner(&self, change: Orders, fault: Option<Arc<Fault>>) -> Flamingock {
        let mut b = Flamingock::builder()
            .audit_store(self.store.clone())
            .target(self.target.clone())
            .lock_config(LockConfig::default().lease(Duration::from_secs(1)))
            .stage(Stage::new("kafka").change(change));
        if let Some(f) = fault {
            b = b.fault_injector(f as Arc<dyn FaultInjector>);
        }
        b.build().expect("runner")
    }
    async fn ctx(&self) -> KafkaContext {
        self.target
            .begin(ContextMode::NonTransactional)
            .await
            .expect("connect")
    }
    async fn states(&self) -> Vec<AuditState> {
        self.store
            .history(&HistoryFilter::all().change("orders-topic"))
            .await
            .expect("history")
            .into_iter()
            .map(|e| e.state)
            .collect()
    }
    async fn cleanup(self) {
        self.ctx()
            .await
            .delete_topic(&self.topic)
            .await
            .expect("delete topic");
    }
}

#[tokio::test]
#[ignore = "needs a Kafka broker: FLAMINGOCK_TEST_KAFKA_URL, or Docker with flamingock-test-support/testcontainers; run with --ignored"]
async fn a_topic_is_declared_once() {
    let w = World::new().await;
    let report = w.runner(w.change(3), None).run().await.expect("run");
    assert_eq!(report.applied(), vec!["orders-topic"]);
    let kafka = w.ctx().await;
    let t = kafka.topic(&w.topic).await.expect("look").expect("made");
    assert_eq!(t.partitions, 3);
    // Declaring it again as it is changes nothing.
    kafka
        .declare_topic(&TopicSpec::new(&w.topic, 3))
        .await
        .expect("as it is");
    // A second run finds it applied.
    let report = w.runner(w.change(3), None).run().await.expect("run");
    assert!(report.applied().is_empty());
    assert_eq!(w.states().await, [AuditState::Started, AuditState::Applied]);
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "needs a Kafka broker: FLAMINGOCK_TEST_KAFKA_URL, or Docker with flamingock-test-support/testcontainers; run with --ignored"]
async fn a_topic_with_another_partition_count_is_a_clear_error_and_stays_as_it_is() {
    let w = World::new().await;
    let kafka = w.ctx().await;
    kafka
        .declare_topic(&TopicSpec::new(&w.topic, 2))
        .await
        .expect("the topic as it is on the cluster");
    let err = w
        .runner(w.change(6), None)
        .run()
        .await
        .expect_err("refused");
    let text = err.chain().to_string();
    assert!(matches!(err, Error::ChangeFailed { .. }), "{err:?}");
    assert!(text.contains(&format!("topic '{}'", w.topic)), "{text}");
    assert!(
        text.contains("asked for 6 partitions") && text.contains("the cluster has 2"),
        "{text}"
    );
    match kafka.declare_topic(&TopicSpec::new(&w.topic, 6)).await {
        Err(KafkaError::Mismatch { current, .. }) => assert_eq!(current, 2),
        other => panic!("the topic was changed: {other:?}"),
    }
    assert_eq!(w.states().await.last(), Some(&AuditState::Failed));
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "needs a Kafka broker: FLAMINGOCK_TEST_KAFKA_URL, or Docker with flamingock-test-support/testcontainers; run with --ignored"]
async fn a_crash_after_the_declaration_is_settled_by_the_check() {
    let w = World::new().await;
    let fault = Fault::new(FaultPoint::AfterCommit, "orders-topic", FaultAction::Crash);
    crash_at(w.runner(w.change(1), Some(fault.clone())).run(), &fault).await;
    assert_eq!(w.states().await, [AuditState::Started]);
    tokio::time::sleep(Duration::from_millis(1200)).await; // the lease ends
    let report = w.runner(w.change(1), None).run().await.expect("next run");
    let line = report
        .changes
        .iter()
        .find(|c| c.change_id.as_ref() == "orders-topic")
        .expect("reported");
    assert_eq!(line.outcome, ChangeOutcome::RecoveredApplied);
    assert_eq!(w.states().await, [AuditState::Started, AuditState::Applied]);
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "needs a Kafka broker: FLAMINGOCK_TEST_KAFKA_URL, or Docker with flamingock-test-support/testcontainers; run with --ignored"]
async fn a_failure_after_the_topic_was_made_rolls_it_back() {
    let w = World::new().await;
    let mut change = w.change(1);
    change.fail_after = true;
    let err = w.runner(change, None).run().await.expect_err("fails");
    assert!(
        err.chain().to_string().contains("refused after the topic"),
        "{err}"
    );
    assert_eq!(
        w.states().await,
        [
            AuditState::Started,
            AuditState::Failed,
            AuditState::RolledBack
        ]
    );
    // Deletion is asynchronous on the broker: give it a bounded moment.
    let kafka = w.ctx().await;
    let mut gone = false;
    for _ in 0..50 {
        if !kafka.topic_exists(&w.topic).await.expect("look") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the rollback deleted the topic");
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_bounded_clear_error() {
    // Nothing listens on port 1: the connection is refused, within the bound.
    let target = KafkaTarget::builder("events", ["127.0.0.1:1"])
        .timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("no I/O at build");
    let started = std::time::Instant::now();
    let err = target
        .begin(ContextMode::NonTransactional)
        .await
        .expect_err("unreachable");
    assert!(
        err.chain().to_string().contains("connect to Kafka"),
        "{err}"
    );
    assert!(err.chain().to_string().contains("127.0.0.1:1"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn bad_addresses_are_refused_before_anything_is_sent() {
    for bad in ["", "localhost", "kafka://:9092", "host:port"] {
        let err = KafkaTarget::builder("events", [bad])
            .build()
            .await
            .expect_err(bad);
        assert!(
            err.chain().to_string().contains("broker address")
                || err.chain().to_string().contains("no bootstrap broker"),
            "{bad}: {err}"
        );
    }
    let ok = KafkaTarget::builder("events", ["kafka://a:9092,b:9093"])
        .build()
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}
