//! One `TransactWriteItems` carrying a change's writes, an optional marker,
//! and an audit entry with its current-state item and the fence check; and
//! the reading of its cancellation reasons.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use flamingock_core::{AuditEntry, BoxError};
use tracing::debug;

use crate::error::{msg, RequestError};
use crate::item::{self, describe_key, entry_item, history_pk, key, timestamp, Item};
use crate::retry::{is_retryable_cancellation, is_retryable_code, RetryPolicy};
use crate::summary;

/// DynamoDB's limit of items in one `TransactWriteItems`.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// Items the audit adds to a shared-transaction commit: the history item,
/// the current-state item and the fence item's operation.
pub(crate) const AUDIT_ITEMS: usize = 3;

/// How many times an audit write reads again because another writer moved
/// the audit between its read and its transaction. Writers hold the lock, so
/// this only bounds appends that race outside it (the audit suite's
/// concurrent appenders).
const MAX_REREADS: u32 = 64;

/// Why a transaction did not commit.
#[derive(Debug)]
pub(crate) enum TxError {
    /// The fence check failed: a newer lease exists.
    Fenced { fence: u64 },
    /// One of the change's own items was refused (a condition or a validation).
    OwnItem { detail: String },
    /// DynamoDB refused the request: nothing was written.
    Refused { detail: String, source: BoxError },
    /// The outcome is unknown (timeout, connection lost, server error).
    Unknown(RequestError),
    /// The fence item could not be read back.
    FenceUnreadable(BoxError),
}

/// The audit part of a transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuditPart<'a> {
    pub(crate) table: &'a str,
    pub(crate) entry: &'a AuditEntry,
}

/// The history item of `entry`.
pub(crate) fn history_put(table: &str, entry: &AuditEntry) -> Result<TransactWriteItem, BoxError> {
    let sk = format!(
        "{}#{}",
        timestamp(&entry.created_at),
        uuid::Uuid::new_v4().simple()
    );
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(entry_item(entry, history_pk(&entry.change_id), sk)))
        .build()?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// Reads the fence value out of a fence item (absent attribute = 0).
pub(crate) fn fence_of(item: &Item) -> Result<u64, String> {
    Ok(item::Reader(item).opt_u64("fence")?.unwrap_or(0))
}

/// What an item of a transaction does, for error messages.
pub(crate) fn describe_item(it: &TransactWriteItem) -> String {
    fn cond(c: Option<&str>) -> String {
        c.map(|c| format!(", condition `{c}`")).unwrap_or_default()
    }
    if let Some(p) = it.put() {
        format!(
            "Put on table {} ({}{})",
            p.table_name(),
            describe_key(p.item()),
            cond(p.condition_expression())
        )
    } else if let Some(u) = it.update() {
        format!(
            "Update on table {} ({}, `{}`{})",
            u.table_name(),
            describe_key(u.key()),
            u.update_expression(),
            cond(u.condition_expression())
        )
    } else if let Some(d) = it.delete() {
        format!(
            "Delete on table {} ({}{})",
            d.table_name(),
            describe_key(d.key()),
            cond(d.condition_expression())
        )
    } else if let Some(c) = it.condition_check() {
        format!(
            "ConditionCheck on table {} ({}{})",
            c.table_name(),
            describe_key(c.key()),
            cond(Some(c.condition_expression()))
        )
    } else {
        "an empty item".to_owned()
    }
}

/// Sends `own` (the change's items), then `tail` (a marker), then, with
/// `audit`, the history item, the current-state item and the fence item's
/// operation, as ONE `TransactWriteItems`.
///
/// An audit write first reads what it replaces ([`summary::Before`]): the
/// current-state item is written only when the entry supersedes it (the
/// current state only ever moves forward, DESIGN section 4), under the
/// condition that it is still the item read, and the fence item's
/// operation checks the fence and moves the applied-set summary. When
/// either condition finds the store moved since the read (and the fence
/// did not refuse), the write is read and sent again. Throttling and
/// conflicts are retried per `retry`.
pub(crate) async fn send(
    client: &Client,
    retry: &RetryPolicy,
    own: &[TransactWriteItem],
    tail: &[TransactWriteItem],
    audit: Option<AuditPart<'_>>,
) -> Result<(), TxError> {
    let mut attempt = 1;
    let mut rereads = 0;
    let err_table = audit
        .map(|a| a.table.to_owned())
        .or_else(|| own.first().map(item_table))
        .unwrap_or_default();
    loop {
        let mut items: Vec<TransactWriteItem> = own.iter().chain(tail).cloned().collect();
        let mut current_at = None;
        let mut fence_at = None;
        if let Some(a) = audit {
            let before = summary::Before::read(client, a.table, retry, &a.entry.change_id)
                .await
                .map_err(|source| TxError::Refused {
                    detail: "could not read the change's current state before writing".into(),
                    source,
                })?;
            let built = (|| -> Result<(), BoxError> {
                items.push(history_put(a.table, a.entry)?);
                let writes_current = before.superseded_by(a.entry);
                if writes_current {
                    current_at = Some(items.len());
                    items.push(before.current_put(a.table, a.entry)?);
                }
                fence_at = Some(items.len());
                items.push(before.fence_op(a.table, a.entry, writes_current)?);
                Ok(())
            })();
            if let Err(source) = built {
                return Err(TxError::Refused {
                    detail: "could not build the audit items".into(),
                    source,
                });
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        let sent = client
            .transact_write_items()
            .set_transact_items(Some(items.clone()))
            .send()
            .await;
        let err = match sent {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(tc)) =
            err.as_service_error()
        {
            let reasons = tc.cancellation_reasons();
            let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
            let token = audit.map_or(0, |a| a.entry.fencing_token);
            // The store moved since the read: the summary's sequence or the
            // current-state item is not what the write was built on.
            let mut moved = current_at.is_some_and(|i| code(i) == "ConditionalCheckFailed");
            if let Some(i) = fence_at.filter(|i| code(*i) == "ConditionalCheckFailed") {
                let stored = reasons.get(i).and_then(|r| r.item());
                let fence = match stored {
                    Some(it) => fence_of(it)
                        .map_err(|d| TxError::FenceUnreadable(msg(format!("fence item: {d}"))))?,
                    None => read_fence(client, audit.map_or("", |a| a.table), retry)
                        .await
                        .map_err(TxError::FenceUnreadable)?,
                };
                if fence > token {
                    return Err(TxError::Fenced { fence });
                }
                moved = true;
            }
            let failing: Vec<String> = (0..items.len())
                .filter(|i| !matches!(code(*i), "None" | "TransactionConflict"))
                .filter(|i| !moved || (Some(*i) != current_at && Some(*i) != fence_at))
                .map(|i| {
                    let why = reasons.get(i).and_then(|r| r.message()).unwrap_or("");
                    format!(
                        "item {} of {} ({}) failed with {}{}{}",
                        i + 1,
                        items.len(),
                        describe_item(&items[i]),
                        code(i),
                        if why.is_empty() { "" } else { ": " },
                        why
                    )
                })
                .collect();
            let own_failed =
                (0..own.len()).any(|i| !matches!(code(i), "None" | "TransactionConflict"));
            if own_failed
                && !is_retryable_cancellation(reasons.iter().map(|r| r.code().unwrap_or("None")))
            {
                return Err(TxError::OwnItem {
                    detail: failing.join("; "),
                });
            }
            if moved && failing.is_empty() && rereads < MAX_REREADS {
                // Another writer got in between (each failure is someone
                // else's success): read again after a short jittered pause.
                rereads += 1;
                debug!(change_id = %audit.map_or("", |a| &a.entry.change_id), rereads, "the audit moved since it was read; reading again");
                retry.backoff(rereads.min(3)).await;
                continue;
            }
            if is_retryable_cancellation(reasons.iter().map(|r| r.code().unwrap_or("None")))
                && attempt < retry.max_attempts
            {
                retry.backoff(attempt).await;
                attempt += 1;
                continue;
            }
            let detail = if failing.is_empty() {
                format!(
                    "transaction cancelled after {attempt} attempt(s) ({})",
                    reasons
                        .iter()
                        .map(|r| r.code().unwrap_or("None"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                failing.join("; ")
            };
            return Err(TxError::Refused {
                detail,
                source: Box::new(RequestError::new("TransactWriteItems", &err_table, err)),
            });
        }
        use aws_sdk_dynamodb::error::ProvideErrorMetadata;
        if is_retryable_code(err.code()) && attempt < retry.max_attempts {
            retry.backoff(attempt).await;
            attempt += 1;
            continue;
        }
        let definite = err
            .raw_response()
            .is_some_and(|r| (400..500).contains(&r.status().as_u16()));
        let throttled = is_retryable_code(err.code());
        let e = RequestError::new("TransactWriteItems", &err_table, err);
        return Err(if definite {
            TxError::Refused {
                detail: if throttled {
                    format!("still throttled after {attempt} attempt(s): {}", e.detail)
                } else {
                    e.detail.clone()
                },
                source: Box::new(e),
            }
        } else {
            TxError::Unknown(e)
        });
    }
}

fn item_table(it: &TransactWriteItem) -> String {
    it.put()
        .map(|p| p.table_name().to_owned())
        .or_else(|| it.update().map(|u| u.table_name().to_owned()))
        .or_else(|| it.delete().map(|d| d.table_name().to_owned()))
        .or_else(|| it.condition_check().map(|c| c.table_name().to_owned()))
        .unwrap_or_default()
}

/// The fence stored in `table` (0 when never raised), read consistently.
pub(crate) async fn read_fence(
    client: &Client,
    table: &str,
    retry: &RetryPolicy,
) -> Result<u64, BoxError> {
    let out = crate::retry::send(retry, "GetItem", || {
        client
            .get_item()
            .table_name(table)
            .set_key(Some(key(item::FENCE, item::FENCE)))
            .consistent_read(true)
            .send()
    })
    .await
    .map_err(|e| Box::new(RequestError::new("GetItem", table, e)) as BoxError)?;
    match out.item() {
        None => Ok(0),
        Some(it) => fence_of(it).map_err(|d| msg(format!("fence item in table {table}: {d}"))),
    }
}
