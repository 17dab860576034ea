//! The DynamoDB implementations under test, shared by the test binaries.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use flamingock_core::{AuditStore, BoxError, LockProvider};
use flamingock_dynamodb::{DynamoAuditStore, DynamoContext, DynamoLock, DynamoTarget};
use flamingock_test_support::audit_suite::{AuditCapabilities, AuditStoreUnderTest};
use flamingock_test_support::bad_input_suite::{BadInputUnderTest, Misshapen, Unprepared};
use flamingock_test_support::lock_suite::{LockCapabilities, LockUnderTest};
use flamingock_test_support::pipeline_suite::{
    PipelineCapabilities, PipelineEnv, PipelineUnderTest,
};
use flamingock_test_support::{require_service, services};
use futures::future::BoxFuture;

/// Lock skew used by the tests: the suites wait out short leases.
const TEST_SKEW: Duration = Duration::from_millis(100);

/// The DynamoDB-API server under test.
#[derive(Debug, Clone)]
pub struct Dynamo {
    url: String,
    /// The client configuration to start from, when the test built one
    /// (e.g. HTTPS with a private CA through `ConnectOptions`).
    base: Option<aws_sdk_dynamodb::Config>,
    /// A private server of this test, stopped when the last clone goes.
    server: Option<Keep>,
    /// Rounds of the pipeline suite's concurrency check.
    repetitions: usize,
}

/// Something kept alive with the backend (a private server), opaque.
#[derive(Clone)]
pub struct Keep(pub Arc<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keep(..)")
    }
}

impl Dynamo {
    /// A new client (its own connection pool) on the test server.
    pub fn client(&self) -> Client {
        Client::from_conf(self.config().build())
    }

    /// The configuration of [`client`](Self::client), to add to.
    pub fn config(&self) -> aws_sdk_dynamodb::config::Builder {
        let creds = match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(id), Ok(secret)) => Credentials::new(id, secret, None, None, "env"),
            _ => Credentials::new("test", "test", None, None, "flamingock-tests"),
        };
        if let Some(base) = &self.base {
            return base.to_builder().credentials_provider(creds);
        }
        let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(Region::new(region))
            .credentials_provider(creds)
    }

    /// The audit store of namespace `ns`.
    pub async fn store(&self, ns: &str) -> DynamoAuditStore {
        DynamoAuditStore::builder(self.client())
            .prefix(ns)
            .lock_clock_skew(TEST_SKEW)
            .build()
            .await
            .expect("store")
    }

    /// Creates a counter table (`pk` String) if missing.
    pub async fn data_table(&self, name: &str) -> Result<(), BoxError> {
        let client = self.client();
        let res = client
            .create_table()
            .table_name(name)
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
            .await;
        match res {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(CreateTableError::ResourceInUseException(_))
                ) => {}
            Err(e) => return Err(e.into()),
        }
        // Real DynamoDB: wait until ACTIVE.
        for _ in 0..240 {
            let t = client.describe_table().table_name(name).send().await?;
            if t.table().and_then(|t| t.table_status()).map(|s| s.as_str()) == Some("ACTIVE") {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!("table {name} never became ACTIVE").into())
    }

    /// Deletes every table whose name starts with `<ns>_`.
    pub async fn drop_namespace(&self, ns: &str) -> Result<(), BoxError> {
        let client = self.client();
        for n in self.tables_of(ns).await? {
            client.delete_table().table_name(&n).send().await?;
        }
        Ok(())
    }

    /// The tables of namespace `ns` (named `<ns>_...`).
    pub async fn tables_of(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        let client = self.client();
        let prefix = format!("{ns}_");
        let mut start: Option<String> = None;
        let mut names = Vec::new();
        loop {
            let out = client
                .list_tables()
                .set_exclusive_start_table_name(start.clone())
                .send()
                .await?;
            names.extend(
                out.table_names()
                    .iter()
                    .filter(|n| n.starts_with(&prefix))
                    .cloned(),
            );
            match out.last_evaluated_table_name() {
                Some(last) => start = Some(last.to_owned()),
                None => break,
            }
        }
        Ok(names)
    }

    /// A counter value.
    pub async fn counter(&self, table: &str, key: &str) -> Result<u64, BoxError> {
        let out = self
            .client()
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(key.into()))
            .consistent_read(true)
            .send()
            .await?;
        Ok(match out.item().and_then(|i| i.get("n")) {
            Some(AttributeValue::N(v)) => v.parse()?,
            Some(other) => return Err(format!("counter {key} is {other:?}").into()),
            None => 0,
        })
    }
}

/// The suites' constructor.
pub async fn dynamo() -> Option<Dynamo> {
    let url = require_service(&services::DYNAMODB);
    Some(Dynamo {
        url,
        base: None,
        server: None,
        // moto slows down with every transaction it has served (it keeps a
        // copy of each): at 30 rounds of 16 runners a lease refresh once
        // came 2.4 s late near the end and the runner stopped, as it must.
        // FLAMINGOCK_DYNAMODB_REPETITIONS asks for more against a real
        // endpoint.
        repetitions: std::env::var("FLAMINGOCK_DYNAMODB_REPETITIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(15),
    })
}

impl Dynamo {
    /// The server at `url`, reached with clients made from `base`, keeping
    /// `server` running while any clone of the result lives; the pipeline
    /// suite's concurrency check runs `FLAMINGOCK_TLS_REPETITIONS` rounds
    /// (default 3: the plain run is the one that repeats).
    pub fn with_config(
        url: String,
        base: aws_sdk_dynamodb::Config,
        server: Arc<dyn std::any::Any + Send + Sync>,
    ) -> Dynamo {
        Dynamo {
            url,
            base: Some(base),
            server: Some(Keep(server)),
            repetitions: std::env::var("FLAMINGOCK_TLS_REPETITIONS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(3),
        }
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }
}

#[flamingock_core::async_trait]
impl AuditStoreUnderTest for Dynamo {
    async fn open(&self, ns: &str) -> Result<Arc<dyn AuditStore>, BoxError> {
        Ok(Arc::new(self.store(ns).await))
    }
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        self.drop_namespace(ns).await
    }
    fn capabilities(&self) -> AuditCapabilities {
        AuditCapabilities::default().client_clock()
    }
}

#[flamingock_core::async_trait]
impl LockUnderTest for Dynamo {
    async fn open(&self, ns: &str) -> Result<Arc<dyn LockProvider>, BoxError> {
        Ok(Arc::new(
            DynamoLock::builder(self.client())
                .prefix(ns)
                .clock_skew(TEST_SKEW)
                .build()
                .await?,
        ))
    }
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        self.drop_namespace(ns).await
    }
    fn capabilities(&self) -> LockCapabilities {
        // moto stalls for most of a second when the machine is busy: with
        // the default 400 ms a 1.2 s lease was once not refreshed in time
        // while the runner worked, and another runner took it.
        LockCapabilities::default().short_lease(Duration::from_secs(1))
    }
}

/// Bumps counter `key` in the target's `<prefix>_data` table.
pub fn bump_in<'a>(
    ctx: &'a mut DynamoContext,
    key: &'a str,
) -> BoxFuture<'a, Result<(), BoxError>> {
    Box::pin(async move {
        let table = format!("{}_data", ctx.prefix());
        ctx.update(
            table,
            HashMap::from([("pk".to_owned(), AttributeValue::S(key.to_owned()))]),
            "ADD n :one",
            [(":one", AttributeValue::N("1".into()))],
        )?;
        Ok(())
    })
}

#[flamingock_core::async_trait]
impl PipelineUnderTest for Dynamo {
    type Target = DynamoTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<DynamoTarget>, BoxError> {
        let store = self.store(ns).await;
        // The "elsewhere" targets keep their tables under another prefix.
        let elsewhere = format!("{ns}_t");
        self.data_table(&format!("{ns}_data")).await?;
        self.data_table(&format!("{elsewhere}_data")).await?;
        let separate = DynamoTarget::builder("separate-marker", self.client())
            .prefix(&elsewhere)
            .build()
            .await?;
        Ok(PipelineEnv {
            lock: Arc::new(store.lock()),
            shared: Some(
                store
                    .shared_target("shared")
                    .build()
                    .await
                    .expect("shared target"),
            ),
            separate: Some(
                DynamoTarget::builder("separate", self.client())
                    .prefix(&elsewhere)
                    .marker(false)
                    .build()
                    .await?,
            ),
            separate_marker: Some(separate),
            store: Arc::new(store),
        })
    }

    fn bump<'a>(ctx: &'a mut DynamoContext, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        bump_in(ctx, key)
    }

    async fn count(&self, target: &DynamoTarget, key: &str) -> Result<u64, BoxError> {
        self.counter(&format!("{}_data", target.prefix()), key)
            .await
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        self.drop_namespace(ns).await
    }

    async fn footprint(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        let mut found = self.tables_of(ns).await?;
        // The suite's counter tables are made by `open`.
        found.retain(|t| !t.ends_with("_data"));
        Ok(found)
    }

    fn capabilities(&self) -> PipelineCapabilities {
        PipelineCapabilities::default()
            .runners(16)
            .repetitions(self.repetitions)
            // moto answers in ~65 ms under load, but stalls for seconds when
            // the machine is busy: a 1.2 s lease left too little margin for
            // the refresh of 16 waiting runners, and with 3 s a process-suite
            // child lost its lease (refreshes 2 s late) before reaching the
            // fault point it was to be killed at.
            .lease(Duration::from_secs(5))
    }
}

#[flamingock_core::async_trait]
impl BadInputUnderTest for Dynamo {
    async fn corrupt_state(&self, ns: &str, id: &str, bad: &str) -> Result<String, BoxError> {
        let table = format!("{ns}_audit");
        self.client()
            .update_item()
            .table_name(&table)
            .key("pk", AttributeValue::S("CURRENT".into()))
            .key("sk", AttributeValue::S(id.into()))
            .update_expression("SET #s = :bad")
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":bad", AttributeValue::S(bad.into()))
            .send()
            .await?;
        Ok(table)
    }

    async fn open_without_auto_create(&self, ns: &str) -> Result<Unprepared, BoxError> {
        let store = DynamoAuditStore::builder(self.client())
            .prefix(ns)
            .auto_create(false)
            .build()
            .await?;
        Ok(Unprepared {
            store: Arc::new(store),
            names: vec![format!("{ns}_audit")],
            ddl: None,
        })
    }

    async fn misshape(&self, ns: &str) -> Result<Misshapen, BoxError> {
        // A table without the sort key `sk`: not an audit table.
        let table = format!("{ns}_audit");
        self.data_table(&table).await?;
        Ok(Misshapen {
            store: Arc::new(self.store(ns).await),
            table,
            detail: "key schema".into(),
        })
    }
}
