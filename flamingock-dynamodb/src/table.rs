//! Table names, creation and readiness checks.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TableDescription, TableStatus,
};
use aws_sdk_dynamodb::Client;
use tracing::info;

use crate::error::RequestError;
use crate::retry::{send, RetryPolicy};

/// How long `prepare` waits for a new table to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a table cannot be used.
#[derive(Debug)]
pub(crate) enum TableProblem {
    /// Missing, wrongly shaped or badly named: the operator must act.
    NotReady(String),
    /// The request failed.
    Request(RequestError),
}

impl TableProblem {
    pub(crate) fn into_box(self) -> flamingock_core::BoxError {
        match self {
            TableProblem::NotReady(d) => crate::error::msg(d),
            TableProblem::Request(e) => Box::new(e),
        }
    }
}

/// Checks the name against DynamoDB's rules, so that a bad prefix is
/// reported as such rather than as a validation error of some request.
pub(crate) fn check_name(table: &str) -> Result<(), TableProblem> {
    let ok_len = (3..=255).contains(&table.len());
    let ok_chars = table
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(TableProblem::NotReady(format!(
            "'{table}' is not a valid DynamoDB table name (3-255 characters of a-z, A-Z, 0-9, '_', '-', '.'); choose another table prefix"
        )))
    }
}

/// [`check_name`]'s verdict as text, for the builders.
pub(crate) fn name_problem(table: &str) -> Option<String> {
    match check_name(table) {
        Ok(()) => None,
        Err(TableProblem::NotReady(d)) => Some(d),
        Err(TableProblem::Request(e)) => Some(e.to_string()),
    }
}

/// Whether `table` exists (with our key schema), for reads on a handle that
/// was never prepared: one `DescribeTable`, which creates and waits for
/// nothing. A table of another shape is an error, as in [`ensure`].
pub(crate) async fn exists(
    client: &Client,
    table: &str,
    retry: &RetryPolicy,
) -> Result<bool, TableProblem> {
    check_name(table)?;
    match describe(client, table, retry).await? {
        Some(t) => check_schema(table, &t).map(|()| true),
        None => Ok(false),
    }
}

/// Makes sure `table` exists with key `pk` (String, HASH) + `sk` (String,
/// RANGE), creating it on demand (pay per request) when `auto_create`, and
/// waits until it is ACTIVE.
pub(crate) async fn ensure(
    client: &Client,
    table: &str,
    auto_create: bool,
    retry: &RetryPolicy,
) -> Result<(), TableProblem> {
    check_name(table)?;
    let described = match describe(client, table, retry).await? {
        Some(t) => t,
        None if !auto_create => {
            return Err(TableProblem::NotReady(format!(
                "table {table} does not exist and automatic creation is off: create it (key: pk String HASH, sk String RANGE) or enable auto_create"
            )))
        }
        None => {
            create(client, table, retry).await?;
            match describe(client, table, retry).await? {
                Some(t) => t,
                None => {
                    return Err(TableProblem::NotReady(format!(
                        "table {table} was created but cannot be described yet"
                    )))
                }
            }
        }
    };
    check_schema(table, &described)?;
    wait_active(client, table, described, retry).await
}

async fn describe(
    client: &Client,
    table: &str,
    retry: &RetryPolicy,
) -> Result<Option<TableDescription>, TableProblem> {
    match send(retry, "DescribeTable", || {
        client.describe_table().table_name(table).send()
    })
    .await
    {
        Ok(out) => Ok(out.table),
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(DescribeTableError::ResourceNotFoundException(_))
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(TableProblem::Request(RequestError::new(
            "DescribeTable",
            table,
            e,
        ))),
    }
}

async fn create(client: &Client, table: &str, retry: &RetryPolicy) -> Result<(), TableProblem> {
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let build = || -> Result<_, aws_sdk_dynamodb::error::BuildError> {
        Ok(client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?))
    };
    let request = build().map_err(|e| TableProblem::NotReady(format!("table {table}: {e}")))?;
    match send(retry, "CreateTable", || request.clone().send()).await {
        Ok(_) => {
            info!(table, "created table");
            Ok(())
        }
        // Another runner created it at the same moment.
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CreateTableError::ResourceInUseException(_))
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(TableProblem::Request(RequestError::new(
            "CreateTable",
            table,
            e,
        ))),
    }
}

fn check_schema(table: &str, t: &TableDescription) -> Result<(), TableProblem> {
    let mut keys: Vec<(String, String)> = t
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect();
    keys.sort();
    let types_ok = ["pk", "sk"].iter().all(|name| {
        t.attribute_definitions()
            .iter()
            .any(|a| a.attribute_name() == *name && *a.attribute_type() == ScalarAttributeType::S)
    });
    let want = [
        ("pk".to_owned(), "HASH".to_owned()),
        ("sk".to_owned(), "RANGE".to_owned()),
    ];
    if keys == want && types_ok {
        Ok(())
    } else {
        Err(TableProblem::NotReady(format!(
            "table {table} exists with key schema {keys:?}, but Flamingock needs pk (String, HASH) and sk (String, RANGE); use another table prefix"
        )))
    }
}

async fn wait_active(
    client: &Client,
    table: &str,
    mut t: TableDescription,
    retry: &RetryPolicy,
) -> Result<(), TableProblem> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match t.table_status() {
            Some(TableStatus::Active) | Some(TableStatus::Updating) | None => return Ok(()),
            Some(TableStatus::Creating) => {}
            Some(other) => {
                return Err(TableProblem::NotReady(format!(
                    "table {table} is {other:?}, not ACTIVE"
                )))
            }
        }
        if started.elapsed() > ACTIVE_TIMEOUT {
            return Err(TableProblem::NotReady(format!(
                "table {table} is still CREATING after {ACTIVE_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
        t = match describe(client, table, retry).await? {
            Some(t) => t,
            None => {
                return Err(TableProblem::NotReady(format!(
                    "table {table} disappeared while waiting for it to become ACTIVE"
                )))
            }
        };
    }
}
