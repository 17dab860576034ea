//! DynamoDB-specific behaviour against a real DynamoDB-API server: the
//! transaction size limit, cancelled transactions, non-transactional
//! changes, fencing inside the change's transaction, outcome-unknown
//! commits, throttling retries, malformed items and missing tables.

use flamingock_core::error::ErrorChain as _;
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use common::{dynamo, Dynamo};
use flamingock_core::{
    AuditEntry, AuditState, AuditStore, Change, ChangeMeta, ChangeResult, CommitWith, ContextMode,
    Error, Flamingock, HistoryFilter, LockError, LockProvider, OrphanPolicy, Stage, StoreError,
    TargetError, TargetSystem, TxStrategy,
};
use flamingock_dynamodb::{DynamoAuditStore, DynamoContext, DynamoLock, DynamoTarget, RetryPolicy};
use flamingock_test_support::namespace;

type Item = HashMap<String, AttributeValue>;

fn pk(v: &str) -> Item {
    HashMap::from([("pk".to_owned(), AttributeValue::S(v.to_owned()))])
}

fn item_key(pk: &str, sk: &str) -> Item {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
        ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

/// Runs `check` in a fresh namespace (with a `<ns>_data` table) and drops it after.
async fn in_ns<F, Fut>(check: F)
where
    F: FnOnce(Dynamo, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(d) = dynamo().await else { return };
    let ns = namespace("ddb");
    d.data_table(&format!("{ns}_data"))
        .await
        .expect("data table");
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(check(
        d.clone(),
        ns.clone(),
    )))
    .await;
    if let Err(e) = d.drop_namespace(&ns).await {
        eprintln!("cleanup of {ns} failed: {e}");
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

async fn exists(d: &Dynamo, table: &str, key: &str) -> bool {
    d.client()
        .get_item()
        .table_name(table)
        .set_key(Some(pk(key)))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item()
        .is_some()
}

async fn states(store: &DynamoAuditStore, id: &str) -> Vec<AuditState> {
    store
        .history(&HistoryFilter::all().change(id))
        .await
        .expect("history")
        .into_iter()
        .map(|e| e.state)
        .collect()
}

/// Puts `n` items `<id>-<i>` into `<prefix>_data`, plus optional extra items.
struct PutMany {
    id: String,
    n: usize,
    extra: Vec<TransactWriteItem>,
    transactional: bool,
}

impl PutMany {
    fn new(id: &str, n: usize) -> Self {
        PutMany {
            id: id.to_owned(),
            n,
            extra: Vec::new(),
            transactional: true,
        }
    }
}

impl Change for PutMany {
    type Target = DynamoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(&self.id)
            .order("0001")
            .transactional(self.transactional)
    }
    async fn apply(&self, ctx: &mut DynamoContext) -> ChangeResult {
        let table = format!("{}_data", ctx.prefix());
        for i in 0..self.n {
            ctx.put(table.clone(), pk(&format!("{}-{i}", self.id)))?;
        }
        for it in &self.extra {
            ctx.push(it.clone())?;
        }
        Ok(())
    }
}

fn runner<T: TargetSystem + Clone>(
    store: &DynamoAuditStore,
    target: T,
    stage: Stage,
) -> Flamingock {
    Flamingock::builder()
        .audit_store(store.clone())
        .target(target)
        .stage(stage)
        // Each scenario brings its own changes into one namespace.
        .orphans(OrphanPolicy::Warn)
        .build()
        .expect("valid pipeline")
}

fn failure_text(r: Result<flamingock_core::RunReport, Error>) -> String {
    let text = match r {
        Err(Error::ChangeFailed { failure, .. }) => {
            let mut text = failure.to_string();
            let mut src = std::error::Error::source(&failure);
            while let Some(s) = src {
                text.push_str(" | ");
                text.push_str(&s.to_string());
                src = s.source();
            }
            text
        }
        other => panic!("expected ChangeFailed, got {other:?}"),
    };
    eprintln!("error seen: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100_items_fail_before_sending() {
    in_ns(|d, ns| async move {
        let store = d.store(&ns).await;
        let data = format!("{ns}_data");
        // 98 + 3 audit items = 101.
        let text = failure_text(
            runner(
                &store,
                store
                    .shared_target("db")
                    .build()
                    .await
                    .expect("shared target"),
                Stage::new("s").change(PutMany::new("big", 98)),
            )
            .run()
            .await,
        );
        assert!(text.contains("101") && text.contains("100"), "{text}");
        assert!(text.contains("98 transaction items"), "{text}");
        assert!(!exists(&d, &data, "big-0").await, "nothing was sent");
        assert_eq!(
            states(&store, "big").await,
            [AuditState::Failed, AuditState::RolledBack]
        );
        // 97 + 3 = exactly 100: one transaction.
        let report = runner(
            &store,
            store
                .shared_target("db")
                .build()
                .await
                .expect("shared target"),
            Stage::new("s").change(PutMany::new("big", 97)),
        )
        .run()
        .await
        .expect("100 items fit");
        assert_eq!(report.applied(), ["big"]);
        assert!(exists(&d, &data, "big-0").await && exists(&d, &data, "big-96").await);

        // Separate target with marker: 100 + 1 marker item = 101.
        let elsewhere = DynamoTarget::builder("other", d.client())
            .prefix(&ns)
            .build()
            .await
            .expect("target");
        let text = failure_text(
            runner(
                &store,
                elsewhere,
                Stage::new("s2").change(PutMany::new("big2", 100)),
            )
            .run()
            .await,
        );
        assert!(text.contains("101") && text.contains("marker"), "{text}");
        assert!(!exists(&d, &data, "big2-0").await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_condition_cancels_the_whole_transaction() {
    in_ns(|d, ns| async move {
        let store = d.store(&ns).await;
        let data = format!("{ns}_data");
        d.client()
            .put_item()
            .table_name(&data)
            .set_item(Some(pk("taken")))
            .send()
            .await
            .expect("seed");
        let guarded = Put::builder()
            .table_name(&data)
            .set_item(Some(pk("taken")))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("put");
        let mut change = PutMany::new("cond", 2);
        change.extra = vec![TransactWriteItem::builder().put(guarded).build()];
        let text = failure_text(
            runner(
                &store,
                store
                    .shared_target("db")
                    .build()
                    .await
                    .expect("shared target"),
                Stage::new("s").change(change),
            )
            .run()
            .await,
        );
        assert!(text.contains("ConditionalCheckFailed"), "{text}");
        assert!(
            text.contains("attribute_not_exists(pk)"),
            "names the condition: {text}"
        );
        assert!(text.contains("item 3 of 6"), "names the item: {text}");
        assert!(text.contains("pk=taken"), "names the key: {text}");
        assert!(
            !exists(&d, &data, "cond-0").await,
            "the other writes were not committed"
        );
        assert_eq!(
            states(&store, "cond").await,
            [AuditState::Failed, AuditState::RolledBack]
        );
    })
    .await;
}

/// Creates a table through the client: a change without transaction.
struct CreateTable {
    table: String,
}

impl Change for CreateTable {
    type Target = DynamoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("create-table")
            .order("0001")
            .transactional(false)
    }
    async fn apply(&self, ctx: &mut DynamoContext) -> ChangeResult {
        assert_eq!(ctx.mode(), ContextMode::NonTransactional);
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        ctx.client()
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .send()
            .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_transactional_changes_use_the_client_and_cannot_push_items() {
    in_ns(|d, ns| async move {
        let store = d.store(&ns).await;
        let table = format!("{ns}_made");
        let r = runner(
            &store,
            store
                .shared_target("db")
                .build()
                .await
                .expect("shared target"),
            Stage::new("s").change(CreateTable {
                table: table.clone(),
            }),
        )
        .run()
        .await
        .expect("create table");
        assert_eq!(r.applied(), ["create-table"]);
        let e = store
            .snapshot()
            .await
            .expect("snapshot")
            .into_iter()
            .find(|e| e.change_id == "create-table")
            .expect("audited");
        assert_eq!(e.tx_strategy, TxStrategy::NonTransactional);
        d.client()
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .expect("the change created the table");

        // Pushing transaction items without a transaction is refused, not dropped.
        let mut change = PutMany::new("pushes", 1);
        change.transactional = false;
        let text = failure_text(
            runner(
                &store,
                store
                    .shared_target("db")
                    .build()
                    .await
                    .expect("shared target"),
                Stage::new("s2").change(change),
            )
            .run()
            .await,
        );
        assert!(
            text.contains("without a transaction") && text.contains("client()"),
            "{text}"
        );
        assert!(!exists(&d, &format!("{ns}_data"), "pushes-0").await);
    })
    .await;
}

fn entry(id: &str, token: u64) -> AuditEntry {
    let mut e = AuditEntry::new(id, AuditState::Applied, token).strategy(TxStrategy::SharedTx);
    e.run_id = "r1".into();
    e
}

/// What [`Inject`] does to `TransactWriteItems` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Keep the request from the server and answer `ThrottlingException`.
    Throttle,
    /// Keep the request from the server and answer a cancellation whose
    /// only reason is `TransactionConflict`.
    Conflict,
    /// Let the request through, then lose the answer (outcome unknown).
    LoseAnswer,
}

/// An SDK interceptor that injects faults into the next `left`
/// `TransactWriteItems` requests of a client.
#[derive(Debug)]
struct Inject {
    fault: Fault,
    left: AtomicUsize,
    hits: AtomicUsize,
    faking: AtomicBool,
    items: Mutex<usize>,
}

impl Inject {
    fn new(fault: Fault, times: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Inject {
            fault,
            left: AtomicUsize::new(times),
            hits: AtomicUsize::new(0),
            faking: AtomicBool::new(false),
            items: Mutex::new(0),
        })
    }
}

#[derive(Debug, Clone)]
struct Shared(std::sync::Arc<Inject>);

impl Intercept for Shared {
    fn name(&self) -> &'static str {
        "flamingock-test-fault-injection"
    }

    fn modify_before_signing(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let req = ctx.request_mut();
        let is_tx = req
            .headers()
            .get("x-amz-target")
            .is_some_and(|t| t.ends_with(".TransactWriteItems"));
        if !is_tx {
            return Ok(());
        }
        let take = self
            .0
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !take {
            return Ok(());
        }
        self.0.hits.fetch_add(1, Ordering::SeqCst);
        let body = req
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let n_items = body.map_or(0, |b| b.matches("\"TableName\"").count());
        *self.0.items.lock().unwrap_or_else(|p| p.into_inner()) = n_items;
        if self.0.fault != Fault::LoseAnswer {
            // The server sees a harmless read instead of the write.
            req.headers_mut()
                .insert("x-amz-target", "DynamoDB_20120810.ListTables");
            *req.body_mut() = "{}".into();
            req.headers_mut().insert("content-length", "2");
        }
        self.0.faking.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if !self.0.faking.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let body = match self.0.fault {
            Fault::LoseAnswer => {
                return Err("connection reset by peer after the request was sent".into())
            }
            Fault::Throttle => r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#.to_owned(),
            Fault::Conflict => {
                let n = *self.0.items.lock().unwrap_or_else(|p| p.into_inner());
                let reasons: Vec<&str> = (0..n)
                    .map(|i| {
                        if i == 0 {
                            r#"{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"}"#
                        } else {
                            r#"{"Code":"None"}"#
                        }
                    })
                    .collect();
                format!(
                    r#"{{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled","CancellationReasons":[{}]}}"#,
                    reasons.join(",")
                )
            }
        };
        let resp = ctx.response_mut();
        *resp.status_mut() = 400u16.try_into()?;
        resp.headers_mut().remove("x-amz-crc32");
        resp.headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        resp.headers_mut()
            .insert("content-length", body.len().to_string());
        *resp.body_mut() = body.into();
        Ok(())
    }
}

async fn faulty_store(
    d: &Dynamo,
    ns: &str,
    inject: &std::sync::Arc<Inject>,
    retry: RetryPolicy,
) -> DynamoAuditStore {
    // The SDK's own retries are off: what is retried here is this crate's doing.
    let conf = d
        .config()
        .retry_config(RetryConfig::disabled())
        .interceptor(Shared(inject.clone()))
        .build();
    DynamoAuditStore::builder(aws_sdk_dynamodb::Client::from_conf(conf))
        .prefix(ns)
        .retry(retry)
        .build()
        .await
        .expect("store")
}

fn quick_retry(n: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(n)
        .base_delay(Duration::from_millis(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_conflicts_are_retried_with_a_bound() {
    in_ns(|d, ns| async move {
        for fault in [Fault::Throttle, Fault::Conflict] {
            let inject = Inject::new(fault, 3);
            let store = faulty_store(&d, &ns, &inject, quick_retry(4)).await;
            let id = format!("{fault:?}");
            store
                .append(&entry(&id, 1))
                .await
                .expect("append after 3 retries");
            assert_eq!(inject.hits.load(Ordering::SeqCst), 3, "{fault:?}");
            assert_eq!(
                states(&store, &id).await,
                [AuditState::Applied],
                "{fault:?}: written once"
            );

            // More faults than attempts: a clear error, and nothing written.
            let inject = Inject::new(fault, 10);
            let store = faulty_store(&d, &ns, &inject, quick_retry(3)).await;
            let id = format!("{fault:?}-exhausted");
            let err = store.append(&entry(&id, 1)).await.expect_err("gives up");
            eprintln!("error seen: {err}");
            assert_eq!(inject.hits.load(Ordering::SeqCst), 3, "{fault:?}: bounded");
            let text = format!(
                "{err} {:?}",
                std::error::Error::source(&err).map(ToString::to_string)
            );
            assert!(
                text.contains(if fault == Fault::Throttle {
                    "ThrottlingException"
                } else {
                    "TransactionConflict"
                }),
                "{text}"
            );
            assert!(states(&store, &id).await.is_empty());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answer_after_sending_is_outcome_unknown() {
    in_ns(|d, ns| async move {
        let inject = Inject::new(Fault::LoseAnswer, 1);
        let store = faulty_store(&d, &ns, &inject, RetryPolicy::default()).await;
        store.prepare().await.expect("prepare");
        let target = store
            .shared_target("db")
            .build()
            .await
            .expect("shared target");
        let mut ctx = target.begin(ContextMode::Transaction).await.expect("begin");
        ctx.put(format!("{ns}_data"), pk("sent")).expect("put");
        match target.commit(ctx, CommitWith::Audit(&entry("c", 0))).await {
            Err(TargetError::Backend { operation, .. }) => {
                assert!(operation.contains("unknown"), "{operation}")
            }
            other => panic!("expected an outcome-unknown backend error, got {other:?}"),
        }
        // DynamoDB did commit: effect and APPLIED entry together, never one alone.
        assert!(exists(&d, &format!("{ns}_data"), "sent").await);
        assert_eq!(states(&store, "c").await, [AuditState::Applied]);
    })
    .await;
}

async fn put_raw(d: &Dynamo, table: &str, item: Item) {
    d.client()
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .expect("put raw item");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_items_are_reported_with_table_and_key() {
    in_ns(|d, ns| async move {
        let store = d.store(&ns).await;
        store.prepare().await.expect("prepare");
        store.append(&entry("good", 0)).await.expect("append");
        let table = format!("{ns}_audit");

        // A current-state item with an unknown state.
        let mut bad = item_key("CURRENT", "bad");
        for (k, v) in [("change_id", "bad"), ("state", "DONE")] {
            bad.insert(k.into(), AttributeValue::S(v.into()));
        }
        put_raw(&d, &table, bad).await;
        match store.snapshot().await {
            Err(StoreError::Malformed { what, detail, .. }) => {
                assert!(
                    what.contains(&table) && what.contains("pk=CURRENT sk=bad"),
                    "{what}"
                );
                assert!(detail.contains("DONE"), "{detail}");
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
        // A history item with a wrong type.
        let mut hist = item_key("HISTORY#good", "2020-01-01T00:00:00.000000000Z#x");
        hist.insert("fencing_token".into(), AttributeValue::S("seven".into()));
        put_raw(&d, &table, hist).await;
        match store.history(&HistoryFilter::all().change("good")).await {
            Err(StoreError::Malformed { what, .. }) => {
                assert!(what.contains("pk=HISTORY#good"), "{what}")
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
        // A fence of the wrong type.
        let mut fence = item_key("FENCE", "FENCE");
        fence.insert("fence".into(), AttributeValue::S("high".into()));
        put_raw(&d, &table, fence).await;
        let err = store.fence().await.expect_err("fence of the wrong type");
        eprintln!("error seen: {err}");
        assert!(err.chain().to_string().contains("fence"), "{err}");
        let err = store
            .append(&entry("x", 3))
            .await
            .expect_err("append against a broken fence");
        eprintln!("error seen: {err}");
        assert!(err.chain().to_string().contains("pk=FENCE"), "{err}");

        // A lock item of the wrong shape.
        let lock = DynamoLock::builder(d.client())
            .prefix(&ns)
            .build()
            .await
            .expect("lock");
        let mut li = item_key(&format!("LOCK#{ns}"), "LOCK");
        li.insert("owner".into(), AttributeValue::S("someone".into()));
        li.insert("token".into(), AttributeValue::S("abc".into()));
        li.insert("expires_at_ms".into(), AttributeValue::N("0".into()));
        put_raw(&d, &table, li).await;
        match lock.inspect().await {
            Err(e @ LockError::Malformed { .. }) => {
                eprintln!("error seen: {e}");
                let LockError::Malformed { detail, .. } = e else {
                    unreachable!()
                };
                assert!(
                    detail.contains("token") && detail.contains(&table),
                    "{detail}"
                )
            }
            other => panic!("expected a malformed lock, got {other:?}"),
        }
        assert!(lock
            .try_acquire("me", Duration::from_secs(5))
            .await
            .is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_misshapen_tables_are_not_ready() {
    in_ns(|d, ns| async move {
        let store = DynamoAuditStore::builder(d.client())
            .prefix(format!("{ns}_none"))
            .auto_create(false)
            .build()
            .await
            .expect("store");
        match store
            .prepare()
            .await
            .inspect_err(|e| eprintln!("error seen: {e}"))
        {
            Err(StoreError::NotReady { detail, .. }) => {
                assert!(detail.contains(&format!("{ns}_none_audit")), "{detail}")
            }
            other => panic!("expected NotReady, got {other:?}"),
        }
        // Reads never create the table: a store that does not exist yet
        // reads as empty, and is still missing afterwards.
        assert!(store.snapshot().await.expect("snapshot").is_empty());
        assert_eq!(store.fence().await.expect("fence"), 0);
        assert!(store.lock().inspect().await.expect("inspect").is_none());
        assert!(matches!(
            store.prepare().await,
            Err(StoreError::NotReady { .. })
        ));
        // `<ns>_data` has no sort key: not an audit table.
        d.data_table(&format!("{ns}_x_audit")).await.expect("table");
        let wrong = DynamoAuditStore::builder(d.client())
            .prefix(format!("{ns}_x"))
            .build()
            .await
            .expect("store");
        match wrong
            .prepare()
            .await
            .inspect_err(|e| eprintln!("error seen: {e}"))
        {
            Err(StoreError::NotReady { detail, .. }) => {
                assert!(detail.contains("key schema"), "{detail}")
            }
            other => panic!("expected NotReady, got {other:?}"),
        }
        // Reading it says the same, instead of reading another table's items.
        assert!(matches!(
            wrong.snapshot().await,
            Err(StoreError::NotReady { detail, .. }) if detail.contains("key schema")
        ));
        // An invalid prefix is refused when the store is built, naming it.
        let bad = DynamoAuditStore::builder(d.client())
            .prefix("no spaces allowed")
            .build()
            .await
            .expect_err("an invalid prefix");
        match bad {
            StoreError::InvalidConfig { detail, .. } => {
                assert!(
                    detail.contains("not a valid DynamoDB table name"),
                    "{detail}"
                )
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    })
    .await;
}

/// The applied-set summary on the fence item: kept by every write, absent
/// (and never started over entries it did not see) on a table whose
/// entries were written without it, and reported when malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_is_kept_and_never_started_over_unseen_entries() {
    use flamingock_core::summary::{term, AuditSummary};
    in_ns(|d, ns| async move {
        let table = format!("{ns}_audit");
        let store = d.store(&ns).await;
        assert_eq!(store.summary().await.expect("summary"), None, "no table yet");
        store.prepare().await.expect("prepare");
        assert_eq!(
            store.summary().await.expect("summary"),
            Some(AuditSummary::default()),
            "a new table starts at zero"
        );
        store.append(&entry("a", 0)).await.expect("append");
        let kept = AuditSummary {
            rows: 1,
            applied: 1,
            digest: term("a", None),
        };
        assert_eq!(store.summary().await.expect("summary"), Some(kept));

        // An earlier version's table: entries, no summary.
        d.client()
            .update_item()
            .table_name(&table)
            .set_key(Some(item_key("FENCE", "FENCE")))
            .update_expression("REMOVE summary_rows, summary_applied, summary_digest, summary_seq")
            .send()
            .await
            .expect("remove the summary");
        assert_eq!(store.summary().await.expect("summary"), None);
        store.append(&entry("b", 0)).await.expect("append without summary");
        let again = d.store(&ns).await;
        again.prepare().await.expect("prepare over entries");
        assert_eq!(
            again.summary().await.expect("summary"),
            None,
            "a summary started at zero over entries would be wrong"
        );
        assert_eq!(again.snapshot().await.expect("snapshot").len(), 2);
        let fence = d
            .client()
            .get_item()
            .table_name(&table)
            .set_key(Some(item_key("FENCE", "FENCE")))
            .consistent_read(true)
            .send()
            .await
            .expect("fence item");
        assert_eq!(
            fence.item().and_then(|i| i.get("unsummarised_writes")),
            Some(&AttributeValue::N("1".into())),
            "writes without summary count themselves"
        );

        // A summary attribute of the wrong type is reported, not guessed.
        d.client()
            .update_item()
            .table_name(&table)
            .set_key(Some(item_key("FENCE", "FENCE")))
            .update_expression("SET summary_rows = :n, summary_applied = :n, summary_digest = :s, summary_seq = :n")
            .expression_attribute_values(":n", AttributeValue::N("2".into()))
            .expression_attribute_values(":s", AttributeValue::S("oops".into()))
            .send()
            .await
            .expect("damage the summary");
        match store.summary().await {
            Err(StoreError::Malformed { what, detail, .. }) => {
                assert!(what.contains("FENCE") && what.contains(&table), "{what}");
                assert!(detail.contains("summary_digest"), "{detail}");
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    })
    .await;
}
