//! The S3 and SQS targets against moto's server (`FLAMINGOCK_TEST_AWS_URL`),
//! with a SQLite audit store: a bucket with versioning, lifecycle and policy
//! applied once; queues with dead-letter settings; a queue that exists with
//! other attributes; a crash settled by the already-in-place check.

use flamingock_core::error::ErrorChain as _;
use std::sync::Arc;

use aws_config::BehaviorVersion;
use flamingock_aws::{AwsError, S3Context, S3Target, SqsContext, SqsQueueSpec, SqsTarget};
use flamingock_core::fault::{FaultInjector, FaultPoint};
use flamingock_core::{
    AuditState, AuditStore, BoxError, Change, ChangeMeta, ChangeOutcome, ChangeResult, ContextMode,
    Error, Flamingock, HistoryFilter, LockConfig, Stage, TargetSystem,
};
use flamingock_sqlite::SqliteAuditStore;
use flamingock_test_support::faults::{crash_at, Fault, FaultAction};
use serde_json::json;

async fn config() -> aws_config::SdkConfig {
    let url = flamingock_test_support::require_service(&flamingock_test_support::services::AWS);
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await
}

async fn s3() -> S3Target {
    let conf = aws_sdk_s3::config::Builder::from(&config().await)
        .force_path_style(true)
        .build();
    S3Target::builder("assets", aws_sdk_s3::Client::from_conf(conf))
        .build()
        .await
        .expect("target")
}

async fn sqs() -> SqsTarget {
    SqsTarget::builder("queues", aws_sdk_sqs::Client::new(&config().await))
        .build()
        .await
        .expect("target")
}

fn ns() -> String {
    flamingock_test_support::namespace("aws").replace('_', "-")
}

struct Bucket {
    name: String,
}

impl Change for Bucket {
    type Target = S3Target;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("assets-bucket").order("0001")
    }
    async fn apply(&self, s3: &mut S3Context) -> ChangeResult {
        s3.ensure_bucket(&self.name).await?;
        s3.set_versioning(&self.name, true).await?;
        s3.set_expiration(&self.name, "tmp", "tmp/", 7).await?;
        s3.set_policy(&self.name, &policy(&self.name)).await?;
        Ok(())
    }
    async fn is_applied(&self, s3: &mut S3Context) -> Result<bool, BoxError> {
        Ok(s3.bucket_exists(&self.name).await?
            && s3.expiration_days(&self.name, "tmp").await? == Some(7))
    }
}

fn policy(bucket: &str) -> serde_json::Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "PublicRead",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": format!("arn:aws:s3:::{bucket}/public/*")
        }]
    })
}

#[tokio::test]
async fn a_bucket_is_created_and_configured_once() {
    let target = s3().await;
    let store = SqliteAuditStore::connect("sqlite::memory:")
        .await
        .expect("store");
    let name = ns();
    let runner = || {
        Flamingock::builder()
            .audit_store(store.clone())
            .target(target.clone())
            .stage(Stage::new("s3").change(Bucket { name: name.clone() }))
            .build()
            .expect("runner")
    };
    assert_eq!(
        runner().run().await.expect("run").applied(),
        ["assets-bucket"]
    );
    assert!(runner()
        .run()
        .await
        .expect("second run")
        .applied()
        .is_empty());
    let mut s3 = target
        .begin(ContextMode::NonTransactional)
        .await
        .expect("ctx");
    assert!(s3.bucket_exists(&name).await.expect("look"));
    // Versioning is not read back: moto's GetBucketVersioning answer is
    // refused by the SDK (see the crate docs).
    assert_eq!(
        s3.expiration_days(&name, "tmp").await.expect("lifecycle"),
        Some(7)
    );
    assert_eq!(s3.policy(&name).await.expect("policy"), Some(policy(&name)));
    // Asked again as they are: nothing written.
    assert!(!s3.ensure_bucket(&name).await.expect("exists"));
    s3.set_versioning(&name, true).await.expect("idempotent");
    assert!(!s3.set_policy(&name, &policy(&name)).await.expect("same"));
    assert!(!s3
        .bucket_exists(&format!("{name}-none"))
        .await
        .expect("look"));
    s3.client()
        .delete_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("cleanup");
}

struct Queues {
    name: String,
    visibility: u32,
}

impl Change for Queues {
    type Target = SqsTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("orders-queues").order("0001")
    }
    async fn apply(&self, sqs: &mut SqsContext) -> ChangeResult {
        let dlq = format!("{}-dlq", self.name);
        sqs.ensure_queue(&SqsQueueSpec::new(&dlq).retention_secs(1_209_600))
            .await?;
        let arn = sqs
            .queue_arn(&dlq)
            .await?
            .ok_or("the dead-letter queue has no ARN")?;
        sqs.ensure_queue(
            &SqsQueueSpec::new(&self.name)
                .visibility_timeout_secs(self.visibility)
                .dead_letter(&arn, 5),
        )
        .await?;
        Ok(())
    }
    async fn is_applied(&self, sqs: &mut SqsContext) -> Result<bool, BoxError> {
        Ok(sqs.queue_exists(&self.name).await?)
    }
}

fn queues_runner(
    store: &SqliteAuditStore,
    target: &SqsTarget,
    change: Queues,
    fault: Option<Arc<Fault>>,
) -> Flamingock {
    let mut b = Flamingock::builder()
        .audit_store(store.clone())
        .target(target.clone())
        .lock_config(LockConfig::default().lease(std::time::Duration::from_secs(1)))
        .stage(Stage::new("sqs").change(change));
    if let Some(f) = fault {
        b = b.fault_injector(f as Arc<dyn FaultInjector>);
    }
    b.build().expect("runner")
}

async fn cleanup(target: &SqsTarget, name: &str) {
    let mut sqs = target
        .begin(ContextMode::NonTransactional)
        .await
        .expect("ctx");
    sqs.delete_queue(name).await.expect("delete");
    sqs.delete_queue(&format!("{name}-dlq"))
        .await
        .expect("delete");
}

#[tokio::test]
async fn queues_with_dead_letter_settings_are_created_once() {
    let target = sqs().await;
    let store = SqliteAuditStore::connect("sqlite::memory:")
        .await
        .expect("store");
    let name = ns();
    let change = || Queues {
        name: name.clone(),
        visibility: 60,
    };
    queues_runner(&store, &target, change(), None)
        .run()
        .await
        .expect("run");
    let again = queues_runner(&store, &target, change(), None)
        .run()
        .await
        .expect("again");
    assert!(again.applied().is_empty());
    let mut sqs = target
        .begin(ContextMode::NonTransactional)
        .await
        .expect("ctx");
    let attrs = sqs.attributes(&name).await.expect("read").expect("exists");
    assert_eq!(
        attrs.get("VisibilityTimeout").map(String::as_str),
        Some("60")
    );
    assert!(
        attrs
            .get("RedrivePolicy")
            .is_some_and(|p| p.contains("-dlq")),
        "{attrs:?}"
    );
    cleanup(&target, &name).await;
}

#[tokio::test]
async fn a_queue_with_other_attributes_is_a_clear_error_and_is_left_alone() {
    let target = sqs().await;
    let store = SqliteAuditStore::connect("sqlite::memory:")
        .await
        .expect("store");
    let name = ns();
    let mut sqs = target
        .begin(ContextMode::NonTransactional)
        .await
        .expect("ctx");
    sqs.ensure_queue(&SqsQueueSpec::new(&name).visibility_timeout_secs(30))
        .await
        .expect("the queue as it is");
    let err = queues_runner(
        &store,
        &target,
        Queues {
            name: name.clone(),
            visibility: 60,
        },
        None,
    )
    .run()
    .await
    .expect_err("refused");
    let text = err.chain().to_string();
    assert!(matches!(err, Error::ChangeFailed { .. }), "{err:?}");
    assert!(text.contains(&format!("SQS queue '{name}'")), "{text}");
    assert!(text.contains("VisibilityTimeout=60"), "asked: {text}");
    assert!(text.contains("VisibilityTimeout=30"), "current: {text}");
    match sqs
        .ensure_queue(&SqsQueueSpec::new(&name).visibility_timeout_secs(60))
        .await
    {
        Err(AwsError::Mismatch { current, .. }) => {
            assert!(current.contains("VisibilityTimeout=30"))
        }
        other => panic!("the queue was changed: {other:?}"),
    }
    cleanup(&target, &name).await;
}

#[tokio::test]
async fn a_crash_after_the_queues_is_settled_by_the_check() {
    let target = sqs().await;
    let store = SqliteAuditStore::connect("sqlite::memory:")
        .await
        .expect("store");
    let name = ns();
    let change = || Queues {
        name: name.clone(),
        visibility: 60,
    };
    let fault = Fault::new(FaultPoint::AfterCommit, "orders-queues", FaultAction::Crash);
    crash_at(
        queues_runner(&store, &target, change(), Some(fault.clone())).run(),
        &fault,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await; // the lease ends
    let report = queues_runner(&store, &target, change(), None)
        .run()
        .await
        .expect("next run");
    let line = report
        .changes
        .iter()
        .find(|c| c.change_id.as_ref() == "orders-queues")
        .expect("reported");
    assert_eq!(line.outcome, ChangeOutcome::RecoveredApplied);
    let states: Vec<AuditState> = store
        .history(&HistoryFilter::all().change("orders-queues"))
        .await
        .expect("history")
        .into_iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(states, [AuditState::Started, AuditState::Applied]);
    cleanup(&target, &name).await;
}
