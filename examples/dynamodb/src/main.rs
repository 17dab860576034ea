//! Flamingock on DynamoDB: a table created outside any transaction, then
//! items seeded and migrated in shared transactions with the audit.

use std::collections::HashMap;
use std::time::Duration;

use flamingock::dynamodb::aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus, TransactWriteItem, Update,
};
use flamingock::dynamodb::{connect, DynamoAuditStore, DynamoContext, DynamoTarget};
use flamingock::{Change, ChangeMeta, ChangeResult, Flamingock, Stage};

fn orders_table(ctx: &DynamoContext) -> String {
    format!("{}_orders", ctx.prefix())
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

/// Creating a table cannot be part of a transaction: this change declares
/// itself non-transactional and calls DynamoDB directly.
struct CreateOrdersTable;

impl Change for CreateOrdersTable {
    type Target = DynamoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("create-orders-table")
            .order("0001")
            .author("ana")
            .transactional(false)
    }
    async fn apply(&self, ctx: &mut DynamoContext) -> ChangeResult {
        let table = orders_table(ctx);
        ctx.client()
            .create_table()
            .table_name(&table)
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
        for _ in 0..120 {
            let t = ctx
                .client()
                .describe_table()
                .table_name(&table)
                .send()
                .await?;
            if t.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!("table {table} did not become ACTIVE").into())
    }
}

/// Seeds orders: every put is sent on commit, with the audit entry.
struct SeedOrders;

impl Change for SeedOrders {
    type Target = DynamoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("seed-orders").order("0002").author("ana")
    }
    async fn apply(&self, ctx: &mut DynamoContext) -> ChangeResult {
        let table = orders_table(ctx);
        for (id, customer, total) in [
            ("o-1", "ada", "42.00"),
            ("o-2", "grace", "7.50"),
            ("o-3", "ada", "19.99"),
        ] {
            ctx.put(
                table.clone(),
                HashMap::from([
                    ("pk".to_owned(), s(id)),
                    ("customer".to_owned(), s(customer)),
                    ("total".to_owned(), AttributeValue::N(total.to_owned())),
                ]),
            )?;
        }
        Ok(())
    }
}

/// A data migration: reads the orders, then adds a status to each one that
/// has none. The condition makes the whole transaction fail (and the change
/// be recorded as rolled back, with nothing written) if someone set a status
/// in between.
struct BackfillStatus;

impl Change for BackfillStatus {
    type Target = DynamoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("backfill-order-status")
            .order("0003")
            .author("ana")
    }
    async fn apply(&self, ctx: &mut DynamoContext) -> ChangeResult {
        let table = orders_table(ctx);
        let orders = ctx
            .client()
            .scan()
            .table_name(&table)
            .consistent_read(true)
            .send()
            .await?;
        for order in orders.items() {
            let Some(key) = order.get("pk").cloned() else {
                continue;
            };
            if order.contains_key("status") {
                continue;
            }
            // Any SDK item can be pushed: here an update with a condition and
            // an attribute name (`status` is a reserved word).
            let update = Update::builder()
                .table_name(&table)
                .key("pk", key)
                .update_expression("SET #status = :new")
                .condition_expression("attribute_not_exists(#status)")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":new", s("NEW"))
                .build()?;
            ctx.push(TransactWriteItem::builder().update(update).build())?;
        }
        Ok(())
    }
}

// An example reports to its terminal.
#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("DYNAMODB_ENDPOINT").ok();
    let prefix = std::env::var("FLAMINGOCK_PREFIX").unwrap_or_else(|_| "example".into());
    let client = connect(endpoint.as_deref()).await;
    let store = DynamoAuditStore::builder(client)
        .prefix(&prefix)
        .build()
        .await?;

    let runner = Flamingock::builder()
        .service("example-dynamodb")
        .audit_store(store.clone())
        .target(store.shared_target("orders-db").build().await?)
        .stage(
            Stage::new("orders")
                .change(CreateOrdersTable)
                .change(SeedOrders)
                .change(BackfillStatus),
        )
        .build()?;

    let report = runner.run().await?;
    println!("{report}");

    let again = runner.run().await?;
    println!(
        "second start: {} skipped, lock taken: {}",
        again.totals().skipped,
        again.took_lock
    );
    Ok(())
}
