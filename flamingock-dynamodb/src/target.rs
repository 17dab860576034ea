//! The transactional target: changes append write items; the commit sends
//! them in ONE `TransactWriteItems`, with the audit entry or the marker.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use flamingock_core::shared_audit::commit_error;
use flamingock_core::{
    AuditEntry, CommitWith, ContextMode, Marker, MarkerSettings, SharedAudit, StoreError,
    TargetCapabilities, TargetError, TargetSystem,
};
use tokio::sync::OnceCell;

use crate::error::{msg, ContextError, RequestError, WithSource};
use crate::item::{key, n, s, Item, Reader};
use crate::retry::{send, RetryPolicy};
use crate::store::{DynamoAuditStore, DEFAULT_PREFIX};
use crate::table::{self, TableProblem};
use crate::tx::{self, AuditPart, TxError, AUDIT_ITEMS, MAX_TRANSACTION_ITEMS};

/// Partition key of marker items (the sort key is the change id).
const MARKER_PK: &str = "MARKER";

/// A DynamoDB target system.
///
/// * From [`DynamoAuditStore::shared_target`]: **shared transaction**. The change's
///   items, its APPLIED history item, its current-state item and the fence
///   check go out in ONE `TransactWriteItems`: effect, audit and fence are
///   atomic, and a crash at any instant needs no operator.
/// * From [`DynamoTarget::builder`] (another account, region or endpoint than the
///   audit store): **separate transaction with marker**. The marker is an
///   item of `<prefix>_marker` written in the change's own
///   `TransactWriteItems`, so the next run can tell whether it committed.
///   [`marker(false)`](DynamoTargetBuilder::marker) turns that off.
///
/// A transaction holds at most 100 items (DynamoDB's limit), the audit or
/// marker items included; a change that writes more fails before anything
/// is sent (see [`MAX_TRANSACTION_ITEMS`]).
#[derive(Clone)]
pub struct DynamoTarget {
    id: String,
    client: Client,
    prefix: String,
    shared: Option<SharedAudit<DynamoAuditStore>>,
    marker: bool,
    auto_create: bool,
    retry: RetryPolicy,
    ready: Arc<OnceCell<()>>,
}

impl std::fmt::Debug for DynamoTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoTarget")
            .field("id", &self.id)
            .field("prefix", &self.prefix)
            .field("shared", &self.shared.is_some())
            .field("marker", &self.marker)
            .finish_non_exhaustive()
    }
}

/// Configures a [`DynamoTarget`]; from [`DynamoTarget::builder`] or
/// [`DynamoAuditStore::shared_target`].
#[derive(Clone)]
#[must_use]
pub struct DynamoTargetBuilder {
    id: String,
    client: Client,
    shared: Option<DynamoAuditStore>,
    markers: MarkerSettings,
    auto_create: bool,
    retry: Option<RetryPolicy>,
}

impl std::fmt::Debug for DynamoTargetBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoTargetBuilder")
            .field("id", &self.id)
            .field("shared", &self.shared.is_some())
            .field("markers", &self.markers)
            .finish_non_exhaustive()
    }
}

impl DynamoTargetBuilder {
    /// Table prefix of this target's own tables (default `flamingock`): the
    /// marker table is `<prefix>_marker`. A shared target keeps no marker:
    /// setting it there is an error at `build`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.markers.set_prefix(prefix);
        self
    }

    /// Whether the target keeps a marker table (default `true`; a shared
    /// target never needs one, and `marker(true)` on it is an error at
    /// `build`). Without it a crash between commit and APPLIED needs an
    /// operator (or `AlwaysRetry`).
    pub fn marker(mut self, yes: bool) -> Self {
        self.markers.set_marker(yes);
        self
    }

    /// Whether the marker table is created when missing (default true).
    pub fn auto_create(mut self, yes: bool) -> Self {
        self.auto_create = yes;
        self
    }

    /// How throttled and conflicting transactions are retried (a shared
    /// target's default is the store's policy).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Checks the settings. Does no I/O (the marker table is looked at when
    /// a change first needs it).
    ///
    /// # Errors
    /// [`TargetError::Unsupported`] for an invalid prefix or marker settings
    /// on a shared target.
    pub async fn build(self) -> Result<DynamoTarget, TargetError> {
        let id = self.id;
        let invalid = |detail: String| TargetError::Unsupported {
            target: id.clone(),
            detail,
        };
        if let Some(store) = self.shared {
            self.markers.check_shared(&id)?;
            return Ok(DynamoTarget {
                id,
                client: store.inner.client.clone(),
                prefix: store.inner.prefix.clone(),
                retry: self.retry.unwrap_or(store.inner.retry),
                shared: Some(SharedAudit::new(store)),
                marker: false,
                auto_create: self.auto_create,
                ready: Arc::default(),
            });
        }
        let (prefix, marker) = self.markers.separate(DEFAULT_PREFIX);
        if let Some(detail) = crate::table::name_problem(&format!("{prefix}_marker")) {
            return Err(invalid(detail));
        }
        Ok(DynamoTarget {
            id,
            client: self.client,
            prefix,
            shared: None,
            marker,
            auto_create: self.auto_create,
            retry: self.retry.unwrap_or_default(),
            ready: Arc::default(),
        })
    }
}

impl DynamoTarget {
    /// A builder for a target on `client` that does not share the audit
    /// store's database: separate transactions, with a marker item in
    /// `<prefix>_marker`.
    pub fn builder(id: impl Into<String>, client: Client) -> DynamoTargetBuilder {
        DynamoTargetBuilder {
            id: id.into(),
            client,
            shared: None,
            markers: MarkerSettings::default(),
            auto_create: true,
            retry: None,
        }
    }

    pub(crate) fn shared(id: String, store: DynamoAuditStore) -> DynamoTargetBuilder {
        let mut builder = Self::builder(id, store.inner.client.clone());
        builder.shared = Some(store);
        builder
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table prefix in force.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The marker table's name.
    pub fn marker_table(&self) -> String {
        format!("{}_marker", self.prefix)
    }

    fn backend(
        &self,
        operation: &'static str,
        source: impl Into<flamingock_core::BoxError>,
    ) -> TargetError {
        TargetError::Backend {
            target: self.id.clone(),
            operation,
            source: source.into(),
        }
    }

    fn not_committed(&self, source: impl Into<flamingock_core::BoxError>) -> TargetError {
        TargetError::NotCommitted {
            target: self.id.clone(),
            source: source.into(),
        }
    }

    async fn marker_ready(&self) -> Result<(), TargetError> {
        let table = self.marker_table();
        self.ready
            .get_or_try_init(|| async {
                table::ensure(&self.client, &table, self.auto_create, &self.retry)
                    .await
                    .map_err(|p| match p {
                        TableProblem::NotReady(_) => {
                            self.backend("prepare marker table", p.into_box())
                        }
                        TableProblem::Request(e) => self.backend("prepare marker table", e),
                    })
            })
            .await
            .map(|_| ())
    }

    fn marker_put(&self, m: &Marker) -> Result<TransactWriteItem, TargetError> {
        let mut item = key(MARKER_PK, &m.change_id);
        item.insert("run_id".into(), s(&m.run_id));
        item.insert("fencing_token".into(), n(m.fencing_token));
        let put = Put::builder()
            .table_name(self.marker_table())
            .set_item(Some(item))
            .build()
            .map_err(|e| self.not_committed(e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn check_size(&self, own: usize, extra: usize, what: &str) -> Result<(), TargetError> {
        let total = own + extra;
        if total > MAX_TRANSACTION_ITEMS {
            return Err(self.not_committed(msg(format!(
                "the change wrote {own} transaction items and Flamingock adds {extra} ({what}): {total} items exceed DynamoDB's limit of {MAX_TRANSACTION_ITEMS} per TransactWriteItems; split the change into several changes"
            ))));
        }
        Ok(())
    }

    fn map_tx(&self, token: u64, e: TxError) -> TargetError {
        let store = || {
            self.shared
                .as_ref()
                .map_or_else(String::new, |st| st.store().name())
        };
        match e {
            TxError::Fenced { fence } => commit_error(
                &self.id,
                StoreError::Fenced {
                    store: store(),
                    token,
                    fence,
                },
            ),
            TxError::OwnItem { detail } => self.not_committed(msg(format!(
                "a condition of the change's own writes failed: {detail}"
            ))),
            TxError::Refused { detail, source } => self.not_committed(WithSource {
                message: format!("DynamoDB refused the transaction: {detail}"),
                source,
            }),
            TxError::Unknown(e) => self.backend("commit (outcome unknown)", e),
            // The transaction was cancelled (nothing committed), but why
            // could not be read: not a fence rejection the runner could
            // name, so it is recorded as not committed.
            TxError::FenceUnreadable(e) => commit_error(
                &self.id,
                StoreError::Backend {
                    store: store(),
                    operation: "read fence",
                    source: e,
                },
            ),
        }
    }
}

/// What a change of a [`DynamoTarget`] receives: the client, and the list of
/// write items its transaction will send on commit.
///
/// In [`ContextMode::NonTransactional`] (a change declared
/// `.transactional(false)`, e.g. creating a table or changing TTL settings)
/// there is no transaction: use [`client`](Self::client) directly; the write
/// helpers then return [`ContextError::NonTransactional`] instead of
/// silently dropping the write.
#[derive(Debug)]
pub struct DynamoContext {
    client: Client,
    items: Vec<TransactWriteItem>,
    mode: ContextMode,
    target: String,
    prefix: String,
    /// The APPLIED entry the shared store staged
    /// ([`AppendInTransaction`](flamingock_core::AppendInTransaction)): sent
    /// in the same request as the change's items.
    pub(crate) audit: Option<AuditEntry>,
}

impl DynamoContext {
    /// The client (same account and endpoint as the target).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether writes are collected into a transaction.
    pub fn mode(&self) -> ContextMode {
        self.mode
    }

    /// The table prefix the target was configured with (handy for tables
    /// kept next to Flamingock's).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The items collected so far, in order.
    pub fn items(&self) -> &[TransactWriteItem] {
        &self.items
    }

    /// Appends any transaction item (a conditional put, a condition check...).
    pub fn push(&mut self, item: TransactWriteItem) -> Result<&mut Self, ContextError> {
        if self.mode == ContextMode::NonTransactional {
            return Err(ContextError::NonTransactional {
                target: self.target.clone(),
            });
        }
        self.items.push(item);
        Ok(self)
    }

    fn build_err(&self, source: aws_sdk_dynamodb::error::BuildError) -> ContextError {
        ContextError::Build {
            target: self.target.clone(),
            source,
        }
    }

    /// Appends a `Put` of `item` into `table`.
    pub fn put(&mut self, table: impl Into<String>, item: Item) -> Result<&mut Self, ContextError> {
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .build()
            .map_err(|e| self.build_err(e))?;
        self.push(TransactWriteItem::builder().put(put).build())
    }

    /// Appends an `Update` of the item at `key` in `table`, e.g.
    /// `ctx.update("users", key, "SET plan = :p", [(":p", AttributeValue::S("free".into()))])`.
    pub fn update<K, V>(
        &mut self,
        table: impl Into<String>,
        key: Item,
        update_expression: impl Into<String>,
        values: V,
    ) -> Result<&mut Self, ContextError>
    where
        K: Into<String>,
        V: IntoIterator<Item = (K, AttributeValue)>,
    {
        let values: HashMap<String, AttributeValue> =
            values.into_iter().map(|(k, v)| (k.into(), v)).collect();
        let update = Update::builder()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(update_expression)
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .build()
            .map_err(|e| self.build_err(e))?;
        self.push(TransactWriteItem::builder().update(update).build())
    }

    /// Appends a `Delete` of the item at `key` in `table`.
    pub fn delete(
        &mut self,
        table: impl Into<String>,
        key: Item,
    ) -> Result<&mut Self, ContextError> {
        let delete = Delete::builder()
            .table_name(table)
            .set_key(Some(key))
            .build()
            .map_err(|e| self.build_err(e))?;
        self.push(TransactWriteItem::builder().delete(delete).build())
    }
}

impl flamingock_core::ChangeContext for DynamoContext {
    type Target = DynamoTarget;
}

impl TargetSystem for DynamoTarget {
    type Context = DynamoContext;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        flamingock_core::shared_audit::transactional_capabilities(self.shared.as_ref(), self.marker)
    }

    async fn begin(&self, mode: ContextMode) -> Result<DynamoContext, TargetError> {
        Ok(DynamoContext {
            client: self.client.clone(),
            items: Vec::new(),
            mode,
            target: self.id.clone(),
            prefix: self.prefix.clone(),
            audit: None,
        })
    }

    async fn commit(&self, ctx: DynamoContext, with: CommitWith<'_>) -> Result<(), TargetError> {
        if ctx.mode == ContextMode::NonTransactional {
            // `push` refuses items in this mode; nothing can be pending.
            return Ok(());
        }
        let mut ctx = ctx;
        match with {
            CommitWith::Audit(entry) => {
                let Some(shared) = &self.shared else {
                    return Err(TargetError::Unsupported {
                        target: self.id.clone(),
                        detail: "asked to commit an audit entry, but this target was not built by DynamoAuditStore::shared_target".into(),
                    });
                };
                self.check_size(
                    ctx.items.len(),
                    AUDIT_ITEMS,
                    "the APPLIED audit entry, the current-state item and the fence check",
                )?;
                shared.append(&self.id, &mut ctx, entry).await?;
                let Some(staged) = ctx.audit.take() else {
                    return Ok(());
                };
                let audit = AuditPart {
                    table: shared.store().table(),
                    entry: &staged,
                };
                tx::send(&self.client, &self.retry, &ctx.items, &[], Some(audit))
                    .await
                    .map_err(|e| self.map_tx(staged.fencing_token, e))
            }
            CommitWith::Marker(m) => {
                let own = &ctx.items;
                self.check_size(own.len(), 1, "the marker item")?;
                self.marker_ready().await?;
                let marker = self.marker_put(m)?;
                tx::send(&self.client, &self.retry, own, &[marker], None)
                    .await
                    .map_err(|e| self.map_tx(m.fencing_token, e))
            }
            _ => {
                let own = &ctx.items;
                self.check_size(own.len(), 0, "nothing")?;
                tx::send(&self.client, &self.retry, own, &[], None)
                    .await
                    .map_err(|e| self.map_tx(0, e))
            }
        }
    }

    async fn abort(&self, _ctx: DynamoContext) -> Result<(), TargetError> {
        // Nothing was sent: dropping the items is the rollback.
        Ok(())
    }

    async fn marker(&self, change_id: &str) -> Result<Option<Marker>, TargetError> {
        if !self.marker {
            return Ok(None);
        }
        self.marker_ready().await?;
        let table = self.marker_table();
        let out = send(&self.retry, "GetItem", || {
            self.client
                .get_item()
                .table_name(&table)
                .set_key(Some(key(MARKER_PK, change_id)))
                .consistent_read(true)
                .send()
        })
        .await
        .map_err(|e| self.backend("read marker", RequestError::new("GetItem", &table, e)))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let r = Reader(&item);
        let parsed = (|| -> Result<Marker, String> {
            Ok(Marker {
                change_id: change_id.to_owned(),
                run_id: r.str("run_id")?.to_owned(),
                fencing_token: r.u64("fencing_token")?,
            })
        })();
        parsed.map(Some).map_err(|d| {
            self.backend(
                "read marker",
                msg(format!(
                    "malformed marker item (pk={MARKER_PK} sk={change_id}) in table {table}: {d}"
                )),
            )
        })
    }

    async fn clear_marker(&self, change_id: &str) -> Result<(), TargetError> {
        if !self.marker {
            return Ok(());
        }
        self.marker_ready().await?;
        let table = self.marker_table();
        send(&self.retry, "DeleteItem", || {
            self.client
                .delete_item()
                .table_name(&table)
                .set_key(Some(key(MARKER_PK, change_id)))
                .send()
        })
        .await
        .map_err(|e| self.backend("clear marker", RequestError::new("DeleteItem", &table, e)))?;
        Ok(())
    }
}
