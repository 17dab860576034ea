//! One pipeline across the stack, audited in PostgreSQL.
#![allow(clippy::print_stdout)] // an example prints its results

use std::time::Duration;

use flamingock::aws::{S3Context, S3Target};
use flamingock::postgres::sqlx::{self, AssertSqlSafe};
use flamingock::postgres::{PgContext, PostgresAuditStore, PostgresTarget};
use flamingock::rabbitmq::{ExchangeKind, QueueSpec, RabbitContext, RabbitTarget};
use flamingock::redis_target::{RedisContext, RedisTarget};
use flamingock::{BoxError, Change, ChangeMeta, ChangeResult, Flamingock, Stage};

/// How long each change waits after its effect, before the runner records
/// it (`PAUSE_MS`): time to kill the process in the middle.
fn pause() -> Duration {
    Duration::from_millis(
        std::env::var("PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

async fn announce(what: &str) {
    println!("  applied: {what}");
    tokio::time::sleep(pause()).await;
}

/// 1. The orders table, committed with its APPLIED entry.
struct OrdersTable;
impl Change for OrdersTable {
    type Target = PostgresTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("orders-table").order("0001").author("ana")
    }
    async fn apply(&self, db: &mut PgContext) -> ChangeResult {
        sqlx::query(AssertSqlSafe(
            "CREATE TABLE whole_stack_orders (id bigint PRIMARY KEY, total numeric NOT NULL)",
        ))
        .execute(db.conn())
        .await?;
        announce("PostgreSQL table whole_stack_orders").await;
        Ok(())
    }
}

/// 2. The orders exchange and a queue bound to it.
struct OrdersQueue;
impl Change for OrdersQueue {
    type Target = RabbitTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("orders-queue").order("0002").author("ana")
    }
    async fn apply(&self, mq: &mut RabbitContext) -> ChangeResult {
        mq.declare_exchange("whole-stack.orders", ExchangeKind::Topic)
            .await?;
        mq.declare_queue(&QueueSpec::durable("whole-stack.orders.created").max_length(100_000))
            .await?;
        mq.bind_queue(
            "whole-stack.orders.created",
            "whole-stack.orders",
            "order.created",
        )
        .await?;
        announce("RabbitMQ queue whole-stack.orders.created bound to whole-stack.orders").await;
        Ok(())
    }
    async fn is_applied(&self, mq: &mut RabbitContext) -> Result<bool, BoxError> {
        Ok(mq.queue_exists("whole-stack.orders.created").await?
            && mq.exchange_exists("whole-stack.orders").await?)
    }
}

/// 3. The invoices bucket, with old drafts expiring.
struct InvoicesBucket;
impl Change for InvoicesBucket {
    type Target = S3Target;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("invoices-bucket")
            .order("0003")
            .author("ana")
    }
    async fn apply(&self, s3: &mut S3Context) -> ChangeResult {
        s3.ensure_bucket("whole-stack-invoices").await?;
        s3.set_expiration("whole-stack-invoices", "drafts", "drafts/", 30)
            .await?;
        announce("S3 bucket whole-stack-invoices").await;
        Ok(())
    }
    async fn is_applied(&self, s3: &mut S3Context) -> Result<bool, BoxError> {
        Ok(s3.bucket_exists("whole-stack-invoices").await?
            && s3.expiration_days("whole-stack-invoices", "drafts").await? == Some(30))
    }
}

/// 4. The feature flag that turns the new order flow on, with its marker
///    in the same MULTI/EXEC.
struct EnableOrderFlow;
impl Change for EnableOrderFlow {
    type Target = RedisTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("enable-order-flow")
            .order("0004")
            .author("ana")
    }
    async fn apply(&self, redis: &mut RedisContext) -> ChangeResult {
        redis.hset("whole-stack:flags", "new-order-flow", "on");
        announce("Redis flag whole-stack:flags new-order-flow=on (sent at commit)").await;
        Ok(())
    }
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,flamingock_core=info".into()),
        )
        .init();
    let store = PostgresAuditStore::connect(&env(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ))
    .await?;
    let broker = RabbitTarget::builder(
        "broker",
        env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    )
    .build()
    .await?;
    // S3: AWS_ENDPOINT_URL for a local stand-in (moto), else AWS itself.
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let s3_conf = flamingock::aws::aws_sdk_s3::config::Builder::from(&aws)
        .force_path_style(std::env::var("AWS_ENDPOINT_URL").is_ok())
        .build();
    let s3 = S3Target::builder(
        "invoices",
        flamingock::aws::aws_sdk_s3::Client::from_conf(s3_conf),
    )
    .build()
    .await?;
    let flags = RedisTarget::builder("flags", env("REDIS_URL", "redis://127.0.0.1:6379/"))
        .build()
        .await?;

    let runner = Flamingock::builder()
        .service("example-whole-stack")
        .audit_store(store.clone())
        .target(store.shared_target("orders-db").build().await?)
        .target(broker)
        .target(s3)
        .target(flags)
        .stage(
            Stage::new("launch-orders")
                .change(OrdersTable)
                .change(OrdersQueue)
                .change(InvoicesBucket)
                .change(EnableOrderFlow),
        )
        .build()?;
    println!("run:");
    let report = runner.run().await?;
    println!("{report}");
    Ok(())
}
