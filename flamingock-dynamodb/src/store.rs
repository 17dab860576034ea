//! The audit store: history items, current-state items and the fence in one table.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use flamingock_core::{AuditEntry, AuditStore, HistoryFilter, LockProvider, StoreError};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use crate::error::{msg, RequestError, WithSource};
use crate::item::{self, describe_key, history_pk, key, n, parse_entry, s, timestamp, Item};
use crate::lock::DynamoLock;
use crate::retry::{send, RetryPolicy};
use crate::summary;
use crate::table::{self, TableProblem};
use crate::target::{DynamoTarget, DynamoTargetBuilder};
use crate::tx::{self, AuditPart, TxError};
use flamingock_core::summary::AuditSummary;

/// Default table prefix.
pub const DEFAULT_PREFIX: &str = "flamingock";

pub(crate) struct StoreInner {
    pub(crate) client: Client,
    pub(crate) prefix: String,
    pub(crate) table: String,
    id: String,
    auto_create: bool,
    pub(crate) retry: RetryPolicy,
    lock_skew: Duration,
    ready: OnceCell<()>,
}

/// The DynamoDB audit store.
///
/// One table, `<prefix>_audit` (key `pk` String + `sk` String), holds:
///
/// | item | `pk` | `sk` |
/// |---|---|---|
/// | current state of a change | `CURRENT` | change id |
/// | history entry | `HISTORY#<change id>` | `<created_at, RFC 3339 ns>#<uuid>` |
/// | fence | `FENCE` | `FENCE` |
/// | lock ([`DynamoLock`]) | `LOCK#<prefix>` | `LOCK` |
///
/// Clones share the handle. Targets made by [`shared_target`](Self::shared_target) share
/// transactions with this store (and its clones) only.
#[derive(Clone)]
pub struct DynamoAuditStore {
    pub(crate) inner: Arc<StoreInner>,
}

impl std::fmt::Debug for DynamoAuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoAuditStore")
            .field("table", &self.inner.table)
            .field("auto_create", &self.inner.auto_create)
            .finish_non_exhaustive()
    }
}

/// Builder of a [`DynamoAuditStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DynamoAuditStoreBuilder {
    client: Client,
    prefix: String,
    auto_create: bool,
    retry: RetryPolicy,
    lock_skew: Duration,
}

impl DynamoAuditStoreBuilder {
    /// Table prefix (default `flamingock`): the table is `<prefix>_audit`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// Whether [`prepare`](AuditStore::prepare) creates the table when it is
    /// missing (default true; on-demand billing).
    pub fn auto_create(mut self, yes: bool) -> Self {
        self.auto_create = yes;
        self
    }
    /// How throttled and conflicting requests are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
    /// Clock-skew margin of the store's own lock ([`DynamoLock`]); default 1 s.
    pub fn lock_clock_skew(mut self, skew: Duration) -> Self {
        self.lock_skew = skew;
        self
    }
    /// Checks the names. Does no I/O: the table is looked at (and made) by
    /// [`prepare`](AuditStore::prepare), when something is to be written.
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] for an invalid prefix.
    pub async fn build(self) -> Result<DynamoAuditStore, StoreError> {
        if let Some(detail) = table::name_problem(&format!("{}_audit", self.prefix)) {
            return Err(StoreError::InvalidConfig {
                store: format!("dynamodb({}_audit)", self.prefix),
                detail,
            });
        }
        let table = format!("{}_audit", self.prefix);
        let region = self
            .client
            .config()
            .region()
            .map_or_else(|| "default-region".to_owned(), ToString::to_string);
        // The id identifies this handle (and its clones), not just the table
        // name: a target only shares transactions with the very client it was
        // made from, which is certain to reach the same endpoint.
        let id = format!(
            "dynamodb:{region}/{table}#{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Ok(DynamoAuditStore {
            inner: Arc::new(StoreInner {
                client: self.client,
                prefix: self.prefix,
                table,
                id,
                auto_create: self.auto_create,
                retry: self.retry,
                lock_skew: self.lock_skew,
                ready: OnceCell::new(),
            }),
        })
    }
}

impl DynamoAuditStore {
    /// Connects with the standard AWS chain (region, credentials), to
    /// `endpoint_url` when given (DynamoDB Local, a compatible service), and
    /// builds a store with the defaults. For a private certificate authority
    /// or another region, build the client with
    /// [`ConnectOptions`](crate::ConnectOptions) and use
    /// [`builder`](Self::builder).
    pub async fn connect(endpoint_url: Option<&str>) -> Result<Self, StoreError> {
        Self::builder(crate::connect(endpoint_url).await)
            .build()
            .await
    }

    /// A builder on `client` (see [`connect`](crate::connect)).
    pub fn builder(client: Client) -> DynamoAuditStoreBuilder {
        DynamoAuditStoreBuilder {
            client,
            prefix: DEFAULT_PREFIX.to_owned(),
            auto_create: true,
            retry: RetryPolicy::default(),
            lock_skew: crate::lock::DEFAULT_SKEW,
        }
    }

    /// The audit table's name.
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// The table prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// A builder for a target whose changes commit in ONE
    /// `TransactWriteItems` with their APPLIED entry, its current-state item
    /// and the fence check (shared transaction strategy); finish it with
    /// `build().await`.
    pub fn shared_target(&self, id: impl Into<String>) -> DynamoTargetBuilder {
        DynamoTarget::shared(id.into(), self.clone())
    }

    /// The lock living in this store's table (also [`AuditStore::default_lock`]).
    pub fn lock(&self) -> DynamoLock {
        DynamoLock::builder(self.inner.client.clone())
            .prefix(self.inner.prefix.clone())
            .auto_create(self.inner.auto_create)
            .retry(self.inner.retry)
            .clock_skew(self.inner.lock_skew)
            .finish()
    }

    pub(crate) fn name(&self) -> String {
        format!("dynamodb({})", self.inner.table)
    }

    fn backend(
        &self,
        operation: &'static str,
        source: impl Into<flamingock_core::BoxError>,
    ) -> StoreError {
        StoreError::Backend {
            store: self.name(),
            operation,
            source: source.into(),
        }
    }

    fn malformed(&self, item: &Item, detail: String) -> StoreError {
        StoreError::Malformed {
            store: self.name(),
            what: format!(
                "item ({}) in table {}",
                describe_key(item),
                self.inner.table
            ),
            detail,
        }
    }

    pub(crate) async fn ensure_ready(&self) -> Result<(), StoreError> {
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
                    TableProblem::NotReady(detail) => StoreError::NotReady {
                        store: self.name(),
                        detail,
                    },
                    TableProblem::Request(e) => self.backend("prepare", e),
                })?;
                summary::start(&self.inner.client, &self.inner.table, &self.inner.retry)
                    .await
                    .map_err(|e| self.backend("start the summary", e))
            })
            .await
            .map(|_| ())
    }

    /// Whether there is anything to read: true once the table was made ready
    /// by this handle, else whether it exists. Reads never create the table.
    async fn readable(&self) -> Result<bool, StoreError> {
        if self.inner.ready.initialized() {
            return Ok(true);
        }
        table::exists(&self.inner.client, &self.inner.table, &self.inner.retry)
            .await
            .map_err(|p| match p {
                TableProblem::NotReady(detail) => StoreError::NotReady {
                    store: self.name(),
                    detail,
                },
                TableProblem::Request(e) => self.backend("describe the table", e),
            })
    }

    /// Maps a failed audit transaction to the store's errors.
    pub(crate) fn tx_error(&self, token: u64, e: TxError) -> StoreError {
        match e {
            TxError::Fenced { fence } => StoreError::Fenced {
                store: self.name(),
                token,
                fence,
            },
            TxError::OwnItem { detail } => self.backend("append", msg(detail)),
            TxError::Refused { detail, source } => self.backend(
                "append",
                WithSource {
                    message: format!("DynamoDB refused the transaction: {detail}"),
                    source,
                },
            ),
            TxError::Unknown(e) => self.backend("append", e),
            TxError::FenceUnreadable(e) => self.backend("read fence", e),
        }
    }

    async fn query_all(
        &self,
        pk: String,
        since: Option<String>,
        projection: Option<&str>,
    ) -> Result<Vec<Item>, StoreError> {
        let table = &self.inner.table;
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = send(&self.inner.retry, "Query", || {
                let mut q = self
                    .inner
                    .client
                    .query()
                    .table_name(table)
                    .consistent_read(true)
                    .expression_attribute_values(":pk", s(&pk))
                    .set_exclusive_start_key(start.clone());
                q = match &since {
                    Some(t) => q
                        .key_condition_expression("pk = :pk AND sk >= :since")
                        .expression_attribute_values(":since", s(t)),
                    None => q.key_condition_expression("pk = :pk"),
                };
                if let Some(p) = projection {
                    q = q.projection_expression(p);
                }
                q.send()
            })
            .await
            .map_err(|e| self.backend("query", RequestError::new("Query", table, e)))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    fn entries(&self, items: Vec<Item>) -> Result<Vec<AuditEntry>, StoreError> {
        items
            .into_iter()
            .map(|it| parse_entry(&it).map_err(|d| self.malformed(&it, d)))
            .collect()
    }
}

fn check_change_id(store: &DynamoAuditStore, entry: &AuditEntry) -> Result<(), StoreError> {
    if entry.change_id.is_empty() {
        return Err(store.backend(
            "append",
            msg("the change id is empty; DynamoDB key attributes cannot be empty"),
        ));
    }
    Ok(())
}

#[async_trait]
impl AuditStore for DynamoAuditStore {
    fn describe(&self) -> String {
        self.name()
    }

    fn store_id(&self) -> &str {
        &self.inner.id
    }

    async fn prepare(&self) -> Result<(), StoreError> {
        self.ensure_ready().await
    }

    async fn claim_fence(&self) -> Result<u64, StoreError> {
        self.ensure_ready().await?;
        let table = &self.inner.table;
        // ADD on a missing attribute starts from 0: the first epoch is 1.
        // A retried request whose answer was lost only skips an epoch.
        let res = send(&self.inner.retry, "UpdateItem", || {
            self.inner
                .client
                .update_item()
                .table_name(table)
                .set_key(Some(key(item::FENCE, item::FENCE)))
                .update_expression("ADD fence :one")
                .expression_attribute_values(":one", n(1))
                .return_values(ReturnValue::UpdatedNew)
                .send()
        })
        .await
        .map_err(|e| self.backend("claim the fence", RequestError::new("UpdateItem", table, e)))?;
        match res.attributes() {
            Some(it) => tx::fence_of(it).map_err(|d| self.malformed(it, d)),
            None => Err(StoreError::Malformed {
                store: self.name(),
                what: format!("{table} fence item"),
                detail: "UpdateItem returned no attributes".into(),
            }),
        }
    }

    async fn fence(&self) -> Result<u64, StoreError> {
        if !self.readable().await? {
            return Ok(0);
        }
        tx::read_fence(&self.inner.client, &self.inner.table, &self.inner.retry)
            .await
            .map_err(|e| self.backend("read fence", e))
    }

    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        check_change_id(self, entry)?;
        self.ensure_ready().await?;
        let audit = AuditPart {
            table: &self.inner.table,
            entry,
        };
        tx::send(&self.inner.client, &self.inner.retry, &[], &[], Some(audit))
            .await
            .map_err(|e| self.tx_error(entry.fencing_token, e))
    }

    async fn snapshot(&self) -> Result<Vec<AuditEntry>, StoreError> {
        if !self.readable().await? {
            return Ok(Vec::new());
        }
        let items = self.query_all(item::CURRENT.to_owned(), None, None).await?;
        let mut out = self.entries(items)?;
        out.sort_by(|a, b| a.change_id.cmp(&b.change_id));
        Ok(out)
    }

    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<AuditEntry>, StoreError> {
        if !self.readable().await? {
            return Ok(Vec::new());
        }
        let since = filter.since.as_ref().map(timestamp);
        let ids: Vec<String> = match &filter.change_id {
            Some(id) => vec![id.clone()],
            // Every change with history has a current-state item (both are
            // written by the same transaction), so the ids come from one
            // query rather than a scan of the table.
            None => self
                .query_all(item::CURRENT.to_owned(), None, Some("pk, sk"))
                .await?
                .iter()
                .map(|it| match it.get("sk") {
                    Some(AttributeValue::S(id)) => Ok(id.clone()),
                    _ => Err(self.malformed(it, "sort key 'sk' is not a string".into())),
                })
                .collect::<Result<_, _>>()?,
        };
        let per_change = futures::stream::iter(ids)
            .map(|id| self.query_all(history_pk(&id), since.clone(), None))
            .buffer_unordered(8)
            .try_collect::<Vec<_>>()
            .await?;
        let mut out = self.entries(per_change.into_iter().flatten().collect())?;
        out.retain(|e| filter.matches(e));
        out.sort_by(flamingock_core::audit::snapshot_order);
        Ok(out)
    }

    async fn summary(&self) -> Result<Option<AuditSummary>, StoreError> {
        // One consistent GetItem of the fence item; a missing table reads
        // as no summary (and creates nothing).
        let table = &self.inner.table;
        match summary::read(&self.inner.client, table, &self.inner.retry)
            .await
            .map_err(|e| self.backend("read the summary", e))?
        {
            Ok(s) => Ok(s),
            Err((item, detail)) => Err(self.malformed(&item, detail)),
        }
    }

    fn default_lock(&self) -> Option<Arc<dyn LockProvider>> {
        Some(Arc::new(self.lock()))
    }
}

/// DynamoDB's transaction is one `TransactWriteItems` request sent at
/// commit: the entry is staged in the change's [`DynamoContext`], and the
/// target sends it in the same request as the change's items, with the
/// current-state item and the fence check. A fence rejection is therefore
/// reported by the target's commit (the cancellation reason of the fence
/// item), not here. Staging makes sure the audit table exists first.
impl flamingock_core::AppendInTransaction for DynamoAuditStore {
    type Transaction = crate::target::DynamoContext;

    async fn append_in_transaction(
        &self,
        tx: &mut crate::target::DynamoContext,
        entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.ensure_ready().await?;
        tx.audit = Some(entry.clone());
        Ok(())
    }
}
