//! The applied-set summary ([`flamingock_core::summary`]) on the fence item,
//! and the reading that every audit write starts with.
//!
//! DynamoDB cannot XOR inside a transaction, and a transaction cannot read
//! the current-state item it replaces. So a write reads first (the
//! current-state item of its change and the fence item, two consistent
//! `GetItem`s sent together), computes the new summary, and makes its
//! `TransactWriteItems` conditional on both being as read: the current-state
//! Put on the item it read (or its absence), the fence item's `Update` on the
//! summary's sequence number, besides the fence check. Writers are serialised
//! by the lock, so a failed condition is rare; it is answered by reading again.
//!
//! A table whose fence item has no summary (made by an earlier version, with
//! entries written without one) keeps none: its writes count themselves in
//! `unsummarised_writes`, which is what [`start`] checks so that it never
//! starts a summary at zero over an entry it did not see.

use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};
use aws_sdk_dynamodb::Client;
use flamingock_core::summary::AuditSummary;
use flamingock_core::{AuditEntry, BoxError};

use crate::error::{msg, RequestError};
use crate::item::{self, entry_item, key, n, parse_entry, s, Item, Reader};
use crate::retry::{send, RetryPolicy};

/// Rows with a current state.
const ROWS: &str = "summary_rows";
/// Rows that count as applied.
const APPLIED: &str = "summary_applied";
/// XOR of the applied rows' terms.
const DIGEST: &str = "summary_digest";
/// Moves with every write of a current-state item: the optimistic check.
const SEQ: &str = "summary_seq";
/// Writes made while the table had no summary.
const UNSUMMARISED: &str = "unsummarised_writes";

/// The summary kept on a fence item, with its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kept {
    pub(crate) summary: AuditSummary,
    pub(crate) seq: u64,
}

/// The summary a fence item holds: `None` when it holds none (or a part is
/// missing); an error names the attribute that is not what it should be.
pub(crate) fn kept(fence_item: &Item) -> Result<Option<Kept>, String> {
    let r = Reader(fence_item);
    let Some(seq) = r.opt_u64(SEQ)? else {
        return Ok(None);
    };
    let part = |name: &str| -> Result<Option<i64>, String> {
        match fence_item.get(name) {
            None => Ok(None),
            Some(_) => r.i64(name).map(Some),
        }
    };
    Ok(
        AuditSummary::from_stored(part(ROWS)?, part(APPLIED)?, part(DIGEST)?)
            .map(|summary| Kept { summary, seq }),
    )
}

/// A consistent read of one item (`None` when it or its table does not exist).
async fn get(
    client: &Client,
    table: &str,
    retry: &RetryPolicy,
    key_of: Item,
) -> Result<Option<Item>, BoxError> {
    let out = send(retry, "GetItem", || {
        client
            .get_item()
            .table_name(table)
            .set_key(Some(key_of.clone()))
            .consistent_read(true)
            .send()
    })
    .await;
    match out {
        Ok(out) => Ok(out.item),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(Box::new(RequestError::new("GetItem", table, e))),
    }
}

/// The fence item of `table` (`None` when absent or the table does not exist).
pub(crate) async fn fence_item(
    client: &Client,
    table: &str,
    retry: &RetryPolicy,
) -> Result<Option<Item>, BoxError> {
    get(client, table, retry, key(item::FENCE, item::FENCE)).await
}

/// Starts the summary at zero on a table without current-state items, unless
/// it has one already or a write without it happened (see the module docs).
pub(crate) async fn start(
    client: &Client,
    table: &str,
    retry: &RetryPolicy,
) -> Result<(), BoxError> {
    let fence = fence_item(client, table, retry).await?;
    if fence.as_ref().and_then(|f| f.get(SEQ)).is_some() {
        return Ok(());
    }
    let seen = match &fence {
        Some(f) => Reader(f).opt_u64(UNSUMMARISED).map_err(msg)?,
        None => None,
    };
    let any = send(retry, "Query", || {
        client
            .query()
            .table_name(table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(item::CURRENT))
            .projection_expression("pk")
            .limit(1)
            .send()
    })
    .await
    .map_err(|e| Box::new(RequestError::new("Query", table, e)) as BoxError)?;
    if any.items().iter().any(|_| true) {
        return Ok(());
    }
    let unsummarised = match seen {
        Some(_) => format!("{UNSUMMARISED} = :seen"),
        None => format!("attribute_not_exists({UNSUMMARISED})"),
    };
    let condition = format!("attribute_not_exists({SEQ}) AND {unsummarised}");
    let sent = send(retry, "UpdateItem", || {
        let mut u = client
            .update_item()
            .table_name(table)
            .set_key(Some(key(item::FENCE, item::FENCE)))
            .update_expression(format!(
                "SET {ROWS} = :zero, {APPLIED} = :zero, {DIGEST} = :zero, {SEQ} = :zero"
            ))
            .condition_expression(&condition)
            .expression_attribute_values(":zero", n(0));
        if let Some(v) = seen {
            u = u.expression_attribute_values(":seen", n(v));
        }
        u.send()
    })
    .await;
    match sent {
        Ok(_) => Ok(()),
        // Started by another handle, or a write without summary came first.
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(Box::new(RequestError::new("UpdateItem", table, e))),
    }
}

/// What an audit write found before writing.
#[derive(Debug)]
pub(crate) struct Before {
    /// The change's current-state item, as stored.
    current: Option<Item>,
    /// Its entry.
    entry: Option<AuditEntry>,
    /// The summary on the fence item.
    kept: Option<Kept>,
}

impl Before {
    /// Reads the current-state item of `change_id` and the fence item.
    pub(crate) async fn read(
        client: &Client,
        table: &str,
        retry: &RetryPolicy,
        change_id: &str,
    ) -> Result<Before, BoxError> {
        let (current, fence) = futures::try_join!(
            get(client, table, retry, key(item::CURRENT, change_id)),
            fence_item(client, table, retry),
        )?;
        let entry = match &current {
            Some(it) => Some(parse_entry(it).map_err(|d| {
                msg(format!(
                    "current-state item of {change_id} in table {table}: {d}"
                ))
            })?),
            None => None,
        };
        let kept = match &fence {
            Some(f) => kept(f).map_err(|d| msg(format!("fence item in table {table}: {d}")))?,
            None => None,
        };
        Ok(Before {
            current,
            entry,
            kept,
        })
    }

    /// Whether `entry` replaces the stored current state.
    pub(crate) fn superseded_by(&self, entry: &AuditEntry) -> bool {
        self.entry.as_ref().is_none_or(|old| entry.supersedes(old))
    }

    /// The current-state Put of `entry`, conditional on the stored item
    /// being the one read.
    pub(crate) fn current_put(
        &self,
        table: &str,
        entry: &AuditEntry,
    ) -> Result<TransactWriteItem, BoxError> {
        let mut put = Put::builder().table_name(table).set_item(Some(entry_item(
            entry,
            item::CURRENT.to_owned(),
            entry.change_id.clone(),
        )));
        put = match &self.current {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(old) => {
                let attr =
                    |name: &str| old.get(name).cloned().unwrap_or(AttributeValue::Null(true));
                put.condition_expression(
                    "created_at = :old_ca AND state_rank = :old_rank AND run_id = :old_run",
                )
                .expression_attribute_values(":old_ca", attr("created_at"))
                .expression_attribute_values(":old_rank", attr("state_rank"))
                .expression_attribute_values(":old_run", attr("run_id"))
            }
        };
        Ok(TransactWriteItem::builder().put(put.build()?).build())
    }

    /// The operation on the fence item: the fence check, and with a
    /// current-state write the summary's move (or the count of writes
    /// without summary).
    pub(crate) fn fence_op(
        &self,
        table: &str,
        entry: &AuditEntry,
        writes_current: bool,
    ) -> Result<TransactWriteItem, BoxError> {
        const FENCE_OK: &str = "(attribute_not_exists(fence) OR fence <= :token)";
        let token = n(entry.fencing_token);
        let all_old = ReturnValuesOnConditionCheckFailure::AllOld;
        if !writes_current {
            let check = ConditionCheck::builder()
                .table_name(table)
                .set_key(Some(key(item::FENCE, item::FENCE)))
                .condition_expression(FENCE_OK)
                .expression_attribute_values(":token", token)
                .return_values_on_condition_check_failure(all_old)
                .build()?;
            return Ok(TransactWriteItem::builder().condition_check(check).build());
        }
        let update = Update::builder()
            .table_name(table)
            .set_key(Some(key(item::FENCE, item::FENCE)))
            .expression_attribute_values(":token", token)
            .return_values_on_condition_check_failure(all_old);
        let update = match self.kept {
            Some(k) => {
                let mut next = k.summary;
                next.replace(self.entry.as_ref(), entry);
                update
                    .update_expression(format!(
                        "SET {ROWS} = :rows, {APPLIED} = :applied, {DIGEST} = :digest, {SEQ} = :next"
                    ))
                    .condition_expression(format!("{FENCE_OK} AND {SEQ} = :seq"))
                    .expression_attribute_values(":rows", n(next.rows))
                    .expression_attribute_values(":applied", n(next.applied))
                    .expression_attribute_values(":digest", n(next.digest))
                    .expression_attribute_values(":seq", n(k.seq))
                    .expression_attribute_values(":next", n(k.seq + 1))
            }
            None => update
                .update_expression(format!("ADD {UNSUMMARISED} :one"))
                .condition_expression(format!("{FENCE_OK} AND attribute_not_exists({SEQ})"))
                .expression_attribute_values(":one", n(1)),
        };
        Ok(TransactWriteItem::builder().update(update.build()?).build())
    }
}

/// The summary `table` keeps, for [`AuditStore::summary`]: one consistent
/// `GetItem` of the fence item.
///
/// [`AuditStore::summary`]: flamingock_core::AuditStore::summary
pub(crate) async fn read(
    client: &Client,
    table: &str,
    retry: &RetryPolicy,
) -> Result<Result<Option<AuditSummary>, (Item, String)>, BoxError> {
    Ok(match fence_item(client, table, retry).await? {
        None => Ok(None),
        Some(f) => match kept(&f) {
            Ok(k) => Ok(k.map(|k| k.summary)),
            Err(d) => Err((f, d)),
        },
    })
}
