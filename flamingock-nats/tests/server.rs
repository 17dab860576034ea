//! The NATS JetStream target against a real server
//! (`FLAMINGOCK_TEST_NATS_URL`), with a SQLite audit store: a stream and a
//! consumer declared once, a stream that exists with another
//! configuration, a crash settled by the already-in-place check, an
//! unreachable server. Streams are named after a fresh namespace and
//! deleted at the end.

use flamingock_core::error::ErrorChain as _;
use std::sync::Arc;

use flamingock_core::fault::{FaultInjector, FaultPoint};
use flamingock_core::{
    AuditState, AuditStore, BoxError, Change, ChangeMeta, ChangeOutcome, ChangeResult, ContextMode,
    Error, Flamingock, HistoryFilter, LockConfig, Stage, TargetSystem,
};
use flamingock_nats::{NatsContext, NatsError, NatsTarget, StreamSpec};
use flamingock_sqlite::SqliteAuditStore;
use flamingock_test_support::faults::{crash_at, Fault, FaultAction};

fn url() -> String {
    flamingock_test_support::require_service(&flamingock_test_support::services::NATS)
}

struct Orders {
    stream: String,
    max_messages: i64,
}

impl Change for Orders {
    type Target = NatsTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("orders-stream")
            .order("0001")
            .author("suite")
    }
    async fn apply(&self, nats: &mut NatsContext) -> ChangeResult {
        let subjects = [format!("{}.>", self.stream.to_lowercase())];
        nats.declare_stream(
            &StreamSpec::new(&self.stream, subjects).max_messages(self.max_messages),
        )
        .await?;
        nats.declare_consumer(&self.stream, "billing", None).await?;
        Ok(())
    }
    async fn is_applied(&self, nats: &mut NatsContext) -> Result<bool, BoxError> {
        Ok(nats.consumer_exists(&self.stream, "billing").await?)
    }
}

struct World {
    stream: String,
    target: NatsTarget,
    store: SqliteAuditStore,
}

impl World {
    async fn new() -> World {
        World {
            stream: flamingock_test_support::namespace("js").to_uppercase(),
            target: NatsTarget::builder("events", url())
                .build()
                .await
                .expect("target"),
            store: SqliteAuditStore::connect("sqlite::memory:")
                .await
                .expect("store"),
        }
    }
    fn change(&self, max_messages: i64) -> Orders {
        Orders {
            stream: self.stream.clone(),
            max_messages,
        }
    }
    fn runner(&self, change: Orders, fault: Option<Arc<Fault>>) -> Flamingock {
        let mut b = Flamingock::builder()
            .audit_store(self.store.clone())
            .target(self.target.clone())
            .lock_config(LockConfig::default().lease(std::time::Duration::from_secs(1)))
            .stage(Stage::new("js").change(change));
        if let Some(f) = fault {
            b = b.fault_injector(f as Arc<dyn FaultInjector>);
        }
        b.build().expect("runner")
    }
    async fn ctx(&self) -> NatsContext {
        self.target
            .begin(ContextMode::NonTransactional)
            .await
            .expect("connect")
    }
    async fn states(&self) -> Vec<AuditState> {
        self.store
            .history(&HistoryFilter::all().change("orders-stream"))
            .await
            .expect("history")
            .into_iter()
            .map(|e| e.state)
            .collect()
    }
    async fn cleanup(self) {
        self.ctx()
            .await
            .delete_stream(&self.stream)
            .await
            .expect("delete stream");
    }
}

#[tokio::test]
async fn a_stream_and_consumer_are_declared_once() {
    let w = World::new().await;
    let report = w.runner(w.change(1000), None).run().await.expect("run");
    assert_eq!(report.applied(), vec!["orders-stream"]);
    let mut nats = w.ctx().await;
    assert!(nats.stream_exists(&w.stream).await.expect("look"));
    assert!(nats
        .consumer_exists(&w.stream, "billing")
        .await
        .expect("look"));
    assert!(!nats
        .consumer_exists(&w.stream, "nobody")
        .await
        .expect("look"));
    assert!(!nats
        .stream_exists("NO_SUCH_STREAM_HERE")
        .await
        .expect("look"));
    let again = w
        .runner(w.change(1000), None)
        .run()
        .await
        .expect("second run");
    assert!(again.applied().is_empty());
    w.cleanup().await;
}

#[tokio::test]
async fn a_stream_with_another_configuration_is_a_clear_error_and_is_left_alone() {
    let w = World::new().await;
    let mut nats = w.ctx().await;
    let subjects = [format!("{}.>", w.stream.to_lowercase())];
    nats.declare_stream(&StreamSpec::new(&w.stream, subjects.clone()).max_messages(5))
        .await
        .expect("the stream as it is on the server");
    let err = w
        .runner(w.change(1000), None)
        .run()
        .await
        .expect_err("refused");
    let text = err.chain().to_string();
    assert!(matches!(err, Error::ChangeFailed { .. }), "{err:?}");
    assert!(text.contains(&format!("stream '{}'", w.stream)), "{text}");
    assert!(
        text.contains("max_messages 1000") && text.contains("max_messages 5"),
        "{text}"
    );
    match nats
        .declare_stream(&StreamSpec::new(&w.stream, subjects).max_messages(1000))
        .await
    {
        Err(NatsError::Mismatch { current, .. }) => assert!(current.contains("max_messages 5")),
        other => panic!("the stream was changed: {other:?}"),
    }
    assert_eq!(w.states().await.last(), Some(&AuditState::Failed));
    w.cleanup().await;
}

#[tokio::test]
async fn a_crash_after_the_declarations_is_settled_by_the_check() {
    let w = World::new().await;
    let fault = Fault::new(FaultPoint::AfterCommit, "orders-stream", FaultAction::Crash);
    crash_at(w.runner(w.change(1000), Some(fault.clone())).run(), &fault).await;
    assert_eq!(w.states().await, [AuditState::Started]);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await; // the lease ends
    let report = w
        .runner(w.change(1000), None)
        .run()
        .await
        .expect("next run");
    let line = report
        .changes
        .iter()
        .find(|c| c.change_id.as_ref() == "orders-stream")
        .expect("reported");
    assert_eq!(line.outcome, ChangeOutcome::RecoveredApplied);
    assert_eq!(w.states().await, [AuditState::Started, AuditState::Applied]);
    w.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_server_and_a_wrong_url_are_clear_errors() {
    let target = NatsTarget::builder("events", "nats://127.0.0.1:1")
        .build()
        .await
        .expect("no I/O at build");
    let err = target
        .begin(ContextMode::NonTransactional)
        .await
        .expect_err("unreachable");
    assert!(err.chain().to_string().contains("connect to NATS"), "{err}");
    let err = NatsTarget::builder("events", "http://127.0.0.1:4222")
        .build()
        .await
        .expect_err("not nats://");
    assert!(
        err.chain().to_string().contains("not a nats:// URL"),
        "{err}"
    );
}
