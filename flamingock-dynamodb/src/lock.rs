//! The fenced lease lock on a DynamoDB item.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, TimeZone, Utc};
use flamingock_core::{Acquire, Lease, LockError, LockInfo, LockProvider};
use tokio::sync::OnceCell;

use crate::error::RequestError;
use crate::item::{describe_key, key, n, s, Item, Reader};
use crate::retry::{send, RetryPolicy};
use crate::store::DEFAULT_PREFIX;
use crate::table::{self, TableProblem};

/// Default clock-skew margin: a lease counts as expired only this long after
/// its recorded end.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(1);

/// Sort key of lock items.
const LOCK_SK: &str = "LOCK";

struct LockInner {
    client: Client,
    table: String,
    pk: String,
    skew: Duration,
    auto_create: bool,
    retry: RetryPolicy,
    ready: OnceCell<()>,
}

/// A fenced lease lock on one item (`pk = LOCK#<name>`, `sk = LOCK`) of the
/// `<prefix>_audit` table.
///
/// * **Acquire** is one conditional `UpdateItem`:
///   `SET owner = :me, expires_at_ms = :exp ADD token :one` if the item or its
///   owner is absent, the lease ended more than the skew margin ago, or the
///   owner is already `:me`. `ADD` makes the token counter atomic and it is
///   never removed, so every grant gets a token strictly above all earlier ones,
///   across releases, expiries and force releases.
/// * **Extend** and **release** (which removes the owner and keeps the token)
///   are conditional on owner AND token.
///
/// DynamoDB has no server clock usable in conditions, so expiry is judged by
/// the *caller's* clock. A lease is treated as expired only
/// [`clock_skew`](DynamoLockBuilder::clock_skew) (default 1 s) after its
/// recorded end, so a taker whose clock runs up to that much ahead of the
/// holder's cannot take a live lease. Larger skews cannot break exactly-once:
/// the taker claims a newer epoch from the audit store's fence, after
/// which every audit write and every shared-transaction commit of the old
/// holder is rejected atomically. The margin only keeps such takeovers rare.
#[derive(Clone)]
pub struct DynamoLock {
    inner: Arc<LockInner>,
}

impl std::fmt::Debug for DynamoLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoLock")
            .field("table", &self.inner.table)
            .field("pk", &self.inner.pk)
            .field("skew", &self.inner.skew)
            .finish_non_exhaustive()
    }
}

/// Builder of a [`DynamoLock`].
#[derive(Debug, Clone)]
pub struct DynamoLockBuilder {
    client: Client,
    prefix: String,
    name: Option<String>,
    skew: Duration,
    auto_create: bool,
    retry: RetryPolicy,
}

impl DynamoLockBuilder {
    /// Table prefix (default `flamingock`): the lock lives in `<prefix>_audit`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// Lock name (default: the table prefix): the item is `LOCK#<name>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Clock-skew margin (default 1 s); see [`DynamoLock`].
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }
    /// Whether the table is created on first use when missing (default true).
    pub fn auto_create(mut self, yes: bool) -> Self {
        self.auto_create = yes;
        self
    }
    /// How throttled requests are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
    /// Checks the names. Does no I/O (the table is looked at by the first
    /// operation).
    pub async fn build(self) -> Result<DynamoLock, LockError> {
        if let Some(detail) = crate::table::name_problem(&format!("{}_audit", self.prefix)) {
            return Err(LockError::Malformed {
                lock: format!("dynamodb({}_audit)", self.prefix),
                detail,
            });
        }
        Ok(self.finish())
    }

    /// The lock, names already checked (the store's own).
    pub(crate) fn finish(self) -> DynamoLock {
        let name = self.name.unwrap_or_else(|| self.prefix.clone());
        DynamoLock {
            inner: Arc::new(LockInner {
                client: self.client,
                table: format!("{}_audit", self.prefix),
                pk: format!("LOCK#{name}"),
                skew: self.skew,
                auto_create: self.auto_create,
                retry: self.retry,
                ready: OnceCell::new(),
            }),
        }
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn time_of(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl DynamoLock {
    /// A builder on `client`.
    pub fn builder(client: Client) -> DynamoLockBuilder {
        DynamoLockBuilder {
            client,
            prefix: DEFAULT_PREFIX.to_owned(),
            name: None,
            skew: DEFAULT_SKEW,
            auto_create: true,
            retry: RetryPolicy::default(),
        }
    }

    fn name(&self) -> String {
        format!("dynamodb({}/{})", self.inner.table, self.inner.pk)
    }

    fn backend(
        &self,
        operation: &'static str,
        source: impl Into<flamingock_core::BoxError>,
    ) -> LockError {
        LockError::Backend {
            lock: self.name(),
            operation,
            source: source.into(),
        }
    }

    fn lost(&self, owner: &str, token: u64) -> LockError {
        LockError::Lost {
            lock: self.name(),
            owner: owner.to_owned(),
            token,
        }
    }

    fn malformed(&self, item: &Item, detail: String) -> LockError {
        LockError::Malformed {
            lock: self.name(),
            detail: format!(
                "item ({}) in table {}: {detail}",
                describe_key(item),
                self.inner.table
            ),
        }
    }

    async fn ready(&self) -> Result<(), LockError> {
        self.inner
            .ready
            .get_or_try_init(|| async {
                table::ensure(
                    &self.inner.client,
                    &self.inner.table,
                    self.inner.auto_create,
                    &self.inner.retry,
                )
                .await
                .map_err(|p| match p {
                    TableProblem::NotReady(d) => self.backend("prepare", crate::error::msg(d)),
                    TableProblem::Request(e) => self.backend("prepare", e),
                })
            })
            .await
            .map(|_| ())
    }

    /// Whether the table exists (see the store's reads): looking at the lock
    /// never creates it.
    async fn readable(&self) -> Result<bool, LockError> {
        if self.inner.ready.initialized() {
            return Ok(true);
        }
        table::exists(&self.inner.client, &self.inner.table, &self.inner.retry)
            .await
            .map_err(|p| match p {
                TableProblem::NotReady(d) => self.backend("describe", crate::error::msg(d)),
                TableProblem::Request(e) => self.backend("describe", e),
            })
    }

    /// The holder recorded in `item`, if it has an owner.
    fn holder(&self, item: &Item) -> Result<Option<LockInfo>, LockError> {
        let r = Reader(item);
        let owner = match r.opt_str("owner").map_err(|d| self.malformed(item, d))? {
            Some(o) => o.to_owned(),
            None => return Ok(None),
        };
        let token = r.u64("token").map_err(|d| self.malformed(item, d))?;
        let expires = r
            .i64("expires_at_ms")
            .map_err(|d| self.malformed(item, d))?;
        Ok(Some(LockInfo::new(
            owner,
            token,
            time_of(expires),
            expires.saturating_add(ms(self.inner.skew)) <= now_ms(),
        )))
    }

    async fn read(&self) -> Result<Option<Item>, LockError> {
        let table = &self.inner.table;
        let out = send(&self.inner.retry, "GetItem", || {
            self.inner
                .client
                .get_item()
                .table_name(table)
                .set_key(Some(key(&self.inner.pk, LOCK_SK)))
                .consistent_read(true)
                .send()
        })
        .await
        .map_err(|e| self.backend("read lock", RequestError::new("GetItem", table, e)))?;
        Ok(out.item)
    }

    /// A conditional update on the lock item owned by `owner` with `token`.
    async fn owned_update(
        &self,
        operation: &'static str,
        owner: &str,
        token: u64,
        update: &str,
        exp: Option<i64>,
    ) -> Result<(), LockError> {
        self.ready().await?;
        let table = &self.inner.table;
        let res = send(&self.inner.retry, "UpdateItem", || {
            let mut u = self
                .inner
                .client
                .update_item()
                .table_name(table)
                .set_key(Some(key(&self.inner.pk, LOCK_SK)))
                .update_expression(update)
                .condition_expression("#owner = :me AND #token = :token")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#token", "token")
                .expression_attribute_values(":me", s(owner))
                .expression_attribute_values(":token", n(token));
            if let Some(exp) = exp {
                u = u.expression_attribute_values(":exp", n(exp));
            }
            u.send()
        })
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => {
                    Err(self.lost(owner, token))
                }
                _ => Err(self.backend(operation, RequestError::new("UpdateItem", table, e))),
            },
        }
    }
}

#[async_trait]
impl LockProvider for DynamoLock {
    fn describe(&self) -> String {
        self.name()
    }

    async fn try_acquire(&self, owner: &str, lease: Duration) -> Result<Acquire, LockError> {
        self.ready().await?;
        let table = &self.inner.table;
        // A holder that releases between our failed condition and our read
        // shows up as "no owner": try again a few times.
        for _ in 0..5 {
            let now = now_ms();
            let exp = now.saturating_add(ms(lease));
            let stale = now.saturating_sub(ms(self.inner.skew));
            let res = send(&self.inner.retry, "UpdateItem", || {
                self.inner
                    .client
                    .update_item()
                    .table_name(table)
                    .set_key(Some(key(&self.inner.pk, LOCK_SK)))
                    .update_expression("SET #owner = :me, expires_at_ms = :exp ADD #token :one")
                    .condition_expression(
                        "attribute_not_exists(pk) OR attribute_not_exists(#owner) OR expires_at_ms <= :stale OR #owner = :me",
                    )
                    .expression_attribute_names("#owner", "owner")
                    .expression_attribute_names("#token", "token")
                    .expression_attribute_values(":me", s(owner))
                    .expression_attribute_values(":exp", n(exp))
                    .expression_attribute_values(":stale", n(stale))
                    .expression_attribute_values(":one", n(1))
                    .return_values(ReturnValue::AllNew)
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .send()
            })
            .await;
            let holder_item = match res {
                Ok(out) => {
                    let attrs = out.attributes.unwrap_or_default();
                    let token = Reader(&attrs)
                        .u64("token")
                        .map_err(|d| self.malformed(&attrs, d))?;
                    return Ok(Acquire::Acquired(Lease::new(token, time_of(exp))));
                }
                Err(e) => match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => match c.item() {
                        Some(it) => Some(it.clone()),
                        None => self.read().await?,
                    },
                    _ => {
                        return Err(
                            self.backend("acquire", RequestError::new("UpdateItem", table, e))
                        )
                    }
                },
            };
            if let Some(info) = holder_item
                .as_ref()
                .map(|it| self.holder(it))
                .transpose()?
                .flatten()
            {
                return Ok(Acquire::Held(info));
            }
        }
        Err(self.backend(
            "acquire",
            crate::error::msg("the lock changed hands five times in a row while acquiring; giving up this attempt"),
        ))
    }

    async fn extend(&self, owner: &str, token: u64, lease: Duration) -> Result<Lease, LockError> {
        let exp = now_ms().saturating_add(ms(lease));
        self.owned_update(
            "extend",
            owner,
            token,
            "SET expires_at_ms = :exp",
            Some(exp),
        )
        .await?;
        Ok(Lease::new(token, time_of(exp)))
    }

    async fn release(&self, owner: &str, token: u64) -> Result<(), LockError> {
        // The token stays: it is the counter of future grants.
        self.owned_update(
            "release",
            owner,
            token,
            "REMOVE #owner, expires_at_ms",
            None,
        )
        .await
    }

    async fn inspect(&self) -> Result<Option<LockInfo>, LockError> {
        if !self.readable().await? {
            return Ok(None);
        }
        match self.read().await? {
            Some(item) => self.holder(&item),
            None => Ok(None),
        }
    }

    async fn force_release(&self) -> Result<Option<LockInfo>, LockError> {
        if !self.readable().await? {
            return Ok(None);
        }
        let table = &self.inner.table;
        let res = send(&self.inner.retry, "UpdateItem", || {
            self.inner
                .client
                .update_item()
                .table_name(table)
                .set_key(Some(key(&self.inner.pk, LOCK_SK)))
                .update_expression("REMOVE #owner, expires_at_ms")
                .condition_expression("attribute_exists(#owner)")
                .expression_attribute_names("#owner", "owner")
                .return_values(ReturnValue::AllOld)
                .send()
        })
        .await;
        match res {
            Ok(out) => match out.attributes {
                Some(old) => self.holder(&old),
                None => Ok(None),
            },
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(None),
                _ => Err(self.backend("force release", RequestError::new("UpdateItem", table, e))),
            },
        }
    }
}
