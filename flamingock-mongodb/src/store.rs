//! The MongoDB audit store.

use flamingock_core::summary::AuditSummary;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flamingock_core::{
    async_trait, reduce_snapshot, AuditEntry, AuditStore, HistoryFilter, LockProvider, StoreError,
};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{Error as DriverError, TRANSIENT_TRANSACTION_ERROR};
use mongodb::options::{
    ClientOptions, DatabaseOptions, IndexOptions, ReadConcern, ReturnDocument, WriteConcern,
};
use mongodb::{Client, ClientSession, Collection, Database, IndexModel};
use tracing::{debug, warn};

use crate::codec::{self, field, Reader, NAMESPACE_EXISTS};
use crate::lock::MongoLock;
use crate::sessions;
use crate::target::{MongoTarget, MongoTargetBuilder};
use crate::topology::{self, Transactions};
use crate::tx;

/// Attempts of an append while the server is unreachable.
const UNREACHABLE_ATTEMPTS: u32 = 3;

/// `_id` of the single fence document.
const FENCE_ID: &str = "fence";

/// Builds a [`MongoAuditStore`]; see [`MongoAuditStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MongoAuditStoreBuilder {
    client: Client,
    database: String,
    prefix: String,
    auto_create: bool,
    write_concern: WriteConcern,
    read_concern: ReadConcern,
    assume_no_transactions: bool,
    retry_for: Duration,
}

impl MongoAuditStoreBuilder {
    /// Prefix of the store's collections (default `flamingock`): `<prefix>_audit_history`,
    /// `<prefix>_audit_current`, `<prefix>_fence` and `<prefix>_lock`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether [`AuditStore::prepare`] creates missing collections and indexes
    /// (default true). When false, a missing collection is [`StoreError::NotReady`].
    pub fn auto_create(mut self, yes: bool) -> Self {
        self.auto_create = yes;
        self
    }

    /// Write concern of every audit and lock write (default `majority`).
    pub fn write_concern(mut self, wc: WriteConcern) -> Self {
        self.write_concern = wc;
        self
    }

    /// Read concern of every audit and lock read (default `majority`).
    pub fn read_concern(mut self, rc: ReadConcern) -> Self {
        self.read_concern = rc;
        self
    }

    /// Behave as on a server without transactions (a standalone `mongod`)
    /// even when the server has them: appends use the non-transactional
    /// protocol and targets report transactions as unavailable. For tests.
    pub fn assume_no_transactions(mut self, yes: bool) -> Self {
        self.assume_no_transactions = yes;
        self
    }

    /// How long an append keeps retrying a transaction that failed with a
    /// `TransientTransactionError` (write conflicts, elections) before giving
    /// up (default 60 s).
    pub fn transaction_retry_timeout(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }

    /// Asks the server whether it runs transactions (`hello`) and builds the store.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the server cannot be reached or refuses
    /// the handshake (wrong credentials...).
    pub async fn build(self) -> Result<MongoAuditStore, StoreError> {
        let describe = format!("mongodb({}.{}_*)", self.database, self.prefix);
        // Names are checked before anything is sent.
        let names_ok =
            flamingock_core::names::plain_identifier("database", &self.database, &['-'], 63)
                .and_then(|()| {
                    flamingock_core::names::plain_identifier(
                        "collection prefix",
                        &self.prefix,
                        &[],
                        100,
                    )
                });
        if let Err(e) = names_ok {
            return Err(StoreError::InvalidConfig {
                store: describe,
                detail: e.to_string(),
            });
        }
        let transactions = if self.assume_no_transactions {
            Transactions::Unavailable(format!(
                "transactions were turned off for this store (assume_no_transactions): {}",
                topology::ADVICE
            ))
        } else {
            topology::detect(&self.client)
                .await
                .map_err(|e| StoreError::Backend {
                    store: describe.clone(),
                    operation: "handshake (hello)",
                    source: crate::explain::boxed(e),
                })?
        };
        if let Transactions::Unavailable(why) = &transactions {
            debug!(store = %describe, %why, "audit store runs without transactions");
        }
        let db = self.client.database_with_options(
            &self.database,
            DatabaseOptions::builder()
                .read_concern(self.read_concern.clone())
                .write_concern(self.write_concern.clone())
                .build(),
        );
        let names = Names::new(&self.prefix);
        Ok(MongoAuditStore {
            inner: Arc::new(StoreInner {
                id: format!("{describe}#{}", uuid::Uuid::new_v4().simple()),
                describe,
                history: db.collection(&names.history),
                current: db.collection(&names.current),
                fence: db.collection(&names.fence),
                sessions: db.collection(&names.sessions),
                names,
                client: self.client,
                db,
                prefix: self.prefix,
                auto_create: self.auto_create,
                read_concern: self.read_concern,
                write_concern: self.write_concern,
                transactions,
                retry_for: self.retry_for,
            }),
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) history: String,
    pub(crate) current: String,
    pub(crate) fence: String,
    pub(crate) lock: String,
    pub(crate) sessions: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        Names {
            history: format!("{prefix}_audit_history"),
            current: format!("{prefix}_audit_current"),
            fence: format!("{prefix}_fence"),
            lock: format!("{prefix}_lock"),
            sessions: format!("{prefix}_sessions"),
        }
    }
}

#[derive(Debug)]
pub(crate) struct StoreInner {
    id: String,
    pub(crate) describe: String,
    pub(crate) client: Client,
    pub(crate) db: Database,
    pub(crate) prefix: String,
    pub(crate) names: Names,
    history: Collection<Document>,
    current: Collection<Document>,
    fence: Collection<Document>,
    pub(crate) sessions: Collection<Document>,
    auto_create: bool,
    pub(crate) read_concern: ReadConcern,
    pub(crate) write_concern: WriteConcern,
    pub(crate) transactions: Transactions,
    retry_for: Duration,
}

/// An audit store in one MongoDB database (DESIGN section 4), with its own
/// fenced lock ([`MongoLock`]) and targets that share its transactions
/// ([`MongoAuditStore::shared_target`]). Clones share one handle.
///
/// Collections (prefix `flamingock` by default):
///
/// * `<prefix>_audit_history`: one document per state transition (append-only);
/// * `<prefix>_audit_current`: one document per change, `_id` = change id,
///   the latest state (the snapshot is one read of this collection);
/// * `<prefix>_fence`: one document `{_id: "fence", fence, seq, last_ms}`;
/// * `<prefix>_lock`: the lock ([`MongoLock`]).
///
/// See the crate documentation for the write protocol, with and without
/// transactions.
#[derive(Clone, Debug)]
pub struct MongoAuditStore {
    pub(crate) inner: Arc<StoreInner>,
}

/// The applied-set summary's fields in the fence document.
const SUMMARY_ROWS: &str = "summary_rows";
const SUMMARY_APPLIED: &str = "summary_applied";
const SUMMARY_DIGEST: &str = "summary_digest";

/// What went wrong inside one append attempt.
#[derive(Debug)]
pub(crate) enum WriteFailure {
    Fenced {
        fence: u64,
    },
    Driver {
        operation: &'static str,
        error: DriverError,
    },
    Malformed {
        what: String,
        detail: String,
    },
    Invalid(String),
    /// A concurrent writer got in the way; running the transaction again may succeed.
    Conflict(String),
}

impl WriteFailure {
    /// The server could not be reached (as opposed to a write conflict).
    fn is_unreachable(&self) -> bool {
        use mongodb::error::ErrorKind;
        matches!(self, WriteFailure::Driver { error, .. } if matches!(
            *error.kind,
            ErrorKind::ServerSelection { .. } | ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. }
        ))
    }

    pub(crate) fn is_transient(&self) -> bool {
        match self {
            WriteFailure::Driver { error, .. } => error.contains_label(TRANSIENT_TRANSACTION_ERROR),
            WriteFailure::Conflict(_) => true,
            _ => false,
        }
    }

    pub(crate) fn into_store_error(self, store: &str, token: u64) -> StoreError {
        match self {
            WriteFailure::Fenced { fence } => StoreError::Fenced {
                store: store.to_owned(),
                token,
                fence,
            },
            WriteFailure::Driver { operation, error } => StoreError::Backend {
                store: store.to_owned(),
                operation,
                source: crate::explain::boxed(error),
            },
            WriteFailure::Malformed { what, detail } => StoreError::Malformed {
                store: store.to_owned(),
                what,
                detail,
            },
            WriteFailure::Invalid(detail) => StoreError::Backend {
                store: store.to_owned(),
                operation: "encode audit entry",
                source: detail.into(),
            },
            WriteFailure::Conflict(detail) => StoreError::Backend {
                store: store.to_owned(),
                operation: "append",
                source: detail.into(),
            },
        }
    }
}

fn driver(operation: &'static str) -> impl FnOnce(DriverError) -> WriteFailure {
    move |error| WriteFailure::Driver { operation, error }
}

/// What the fence document handed to one append.
struct Reservation {
    seq: i64,
    /// The server's clock (ms since the epoch), strictly above every earlier append's.
    at_ms: i64,
}

impl MongoAuditStore {
    /// A builder for a store in database `database` of `client`.
    pub fn builder(client: Client, database: impl Into<String>) -> MongoAuditStoreBuilder {
        MongoAuditStoreBuilder {
            client,
            database: database.into(),
            prefix: "flamingock".to_owned(),
            auto_create: true,
            write_concern: WriteConcern::majority(),
            read_concern: ReadConcern::majority(),
            assume_no_transactions: false,
            retry_for: Duration::from_secs(60),
        }
    }

    /// Connects to `uri` and opens a store with the default settings in the
    /// database the URI names (`mongodb://host/app?replicaSet=rs0`: `app`).
    ///
    /// # Errors
    /// [`StoreError::NotReady`] for a URI that names no database;
    /// [`StoreError::Backend`] for an invalid URI or an unreachable server.
    pub async fn connect(uri: &str) -> Result<Self, StoreError> {
        let options = ClientOptions::parse(uri)
            .await
            .map_err(|e| StoreError::Backend {
                store: "mongodb".to_owned(),
                operation: "parse connection string",
                source: crate::explain::boxed(e),
            })?;
        let Some(database) = options.default_database.clone() else {
            return Err(StoreError::InvalidConfig {
                store: "mongodb".to_owned(),
                detail: "the connection string names no database: add it as the path \
                         (mongodb://host/app), or use MongoAuditStore::builder(client, \"app\")"
                    .to_owned(),
            });
        };
        // Named in a failure (never the password): "authentication failed"
        // alone does not say whose credentials were refused.
        let user = options.credential.as_ref().and_then(|c| c.username.clone());
        let client = Client::with_options(options).map_err(|e| StoreError::Backend {
            store: format!("mongodb({database})"),
            operation: "create the client",
            source: crate::explain::boxed(e),
        })?;
        Self::builder(client, database)
            .build()
            .await
            .map_err(|e| match (e, user) {
                (
                    StoreError::Backend {
                        store,
                        operation,
                        source,
                    },
                    Some(user),
                ) => StoreError::Backend {
                    store: format!("{store} as user '{user}'"),
                    operation,
                    source,
                },
                (e, _) => e,
            })
    }

    /// A builder for a target whose changes commit in the same transaction
    /// as their APPLIED entry (shared-transaction strategy); finish it with
    /// `build().await`.
    pub fn shared_target(&self, id: impl Into<String>) -> MongoTargetBuilder {
        MongoTarget::shared(id.into(), self.clone())
    }

    /// The store's own lock, in `<prefix>_lock`.
    pub fn lock(&self) -> MongoLock {
        MongoLock::in_collection(
            self.inner.db.collection::<Document>(&self.inner.names.lock),
            &self.inner.prefix,
        )
    }

    /// Whether appends (and targets of this store) use transactions.
    pub fn transactions(&self) -> bool {
        self.inner.transactions == Transactions::Available
    }

    /// The database the store lives in.
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// The driver client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    fn backend(&self, operation: &'static str) -> impl FnOnce(DriverError) -> StoreError + '_ {
        move |e| StoreError::Backend {
            store: self.inner.describe.clone(),
            operation,
            source: crate::explain::boxed(e),
        }
    }

    fn malformed(&self, what: String, detail: String) -> StoreError {
        StoreError::Malformed {
            store: self.inner.describe.clone(),
            what,
            detail,
        }
    }

    async fn create_collections(&self) -> Result<(), StoreError> {
        let n = &self.inner.names;
        for name in [&n.history, &n.current, &n.fence, &n.lock] {
            match self.inner.db.create_collection(name.as_str()).await {
                Ok(()) => {}
                Err(e) if codec::error_code(&e) == Some(NAMESPACE_EXISTS) => {}
                Err(e) => return Err(self.backend("create collection")(e)),
            }
        }
        let indexes = [
            IndexModel::builder()
                .keys(doc! { field::CHANGE_ID: 1, field::SEQ: 1 })
                .build(),
            IndexModel::builder().keys(doc! { field::SEQ: 1 }).build(),
            IndexModel::builder()
                .keys(doc! { field::CREATED_AT: 1 })
                .build(),
            IndexModel::builder()
                .keys(doc! { field::PENDING: 1 })
                .options(IndexOptions::builder().sparse(true).build())
                .build(),
        ];
        self.inner
            .history
            .create_indexes(indexes)
            .await
            .map_err(self.backend("create indexes"))?;
        Ok(())
    }

    async fn check_collections(&self) -> Result<(), StoreError> {
        let existing = self
            .inner
            .db
            .list_collection_names()
            .await
            .map_err(self.backend("list collections"))?;
        let n = &self.inner.names;
        let missing: Vec<&str> = [&n.history, &n.current, &n.fence, &n.lock]
            .into_iter()
            .filter(|c| !existing.contains(c))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(StoreError::NotReady {
            store: self.inner.describe.clone(),
            detail: format!(
                "collection(s) {} do not exist in database '{}' and auto_create is off: \
                 create them (with the indexes listed in the flamingock-mongodb docs) or \
                 build the store with .auto_create(true)",
                missing.join(", "),
                self.inner.db.name()
            ),
        })
    }

    /// Reads the fence document (outside any transaction).
    async fn read_fence(&self) -> Result<u64, StoreError> {
        let doc = self
            .inner
            .fence
            .find_one(doc! { "_id": FENCE_ID })
            .await
            .map_err(self.backend("read fence"))?;
        let Some(doc) = doc else { return Ok(0) };
        let r = Reader::new(&self.inner.names.fence, &doc);
        match r.opt_i64("fence") {
            Ok(None) => Ok(0),
            Ok(Some(v)) => u64::try_from(v)
                .map_err(|_| self.malformed(r.what.clone(), format!("negative fence {v}"))),
            Err(detail) => Err(self.malformed(r.what.clone(), detail)),
        }
    }

    /// Conditional on the fence being at most `token`: bumps the sequence and
    /// stamps the server's clock. Inside a transaction this write also makes
    /// any concurrent fence claim conflict with the append.
    async fn reserve(
        &self,
        session: Option<&mut ClientSession>,
        token: u64,
    ) -> Result<Reservation, WriteFailure> {
        let t = codec::u64_to_bson(token)
            .ok_or_else(|| WriteFailure::Invalid(format!("fencing token {token} is too large")))?;
        let filter = doc! {
            "_id": FENCE_ID,
            "$or": [ { "fence": { "$lte": t } }, { "fence": Bson::Null } ],
        };
        // `$toLong` on both sides keeps the clock arithmetic numeric (see
        // the crate docs, "SecantusDB differences").
        let update = vec![doc! { "$set": {
            "fence": { "$ifNull": [ "$fence", 0_i64 ] },
            field::SEQ: { "$add": [ { "$ifNull": [ "$seq", 0_i64 ] }, 1_i64 ] },
            "last_ms": { "$max": [
                { "$toLong": "$$NOW" },
                { "$add": [ { "$ifNull": [ "$last_ms", 0_i64 ] }, 1_i64 ] },
            ] },
        } }];
        let action = self
            .inner
            .fence
            .find_one_and_update(filter, update)
            .upsert(true)
            .return_document(ReturnDocument::After);
        let res = match session {
            Some(s) => action.session(s).await,
            None => action.await,
        };
        let doc = match res {
            Ok(Some(d)) => d,
            // MongoDB answers a lost upsert race with a duplicate key;
            // SecantusDB may answer with no document. Either way: try again.
            Ok(None) => {
                return Err(WriteFailure::Conflict(
                    "a concurrent writer created the fence document first".into(),
                ))
            }
            // The filter missed an existing fence document: it is above our token
            // (or malformed; the caller reads it to tell).
            Err(e) if codec::is_duplicate_key(&e) => return Err(WriteFailure::Fenced { fence: 0 }),
            Err(e) => return Err(driver("reserve sequence at the fence")(e)),
        };
        let r = Reader::new(&self.inner.names.fence, &doc);
        let bad = |detail| WriteFailure::Malformed {
            what: r.what.clone(),
            detail,
        };
        Ok(Reservation {
            seq: r.i64(field::SEQ).map_err(bad)?,
            at_ms: r.i64("last_ms").map_err(bad)?,
        })
    }

    /// The entry as stored: the store's clock and sequence number.
    fn stamped(
        entry: &AuditEntry,
        res: &Reservation,
    ) -> Result<(AuditEntry, Document), WriteFailure> {
        let mut e = entry.clone();
        e.created_at = codec::from_bson_date(mongodb::bson::DateTime::from_millis(res.at_ms))
            .ok_or_else(|| {
                WriteFailure::Invalid(format!("server clock {} out of range", res.at_ms))
            })?;
        let doc = codec::encode_entry(&e, res.seq).map_err(WriteFailure::Invalid)?;
        Ok((e, doc))
    }

    fn decode_current(&self, doc: &Document) -> Result<AuditEntry, WriteFailure> {
        let r = Reader::new(&self.inner.names.current, doc);
        codec::decode_entry(&r).map_err(|detail| WriteFailure::Malformed {
            what: r.what.clone(),
            detail,
        })
    }

    /// Fence check, history insert and current-state update inside the
    /// transaction open on `session`. Used by [`AuditStore::append`] and by
    /// shared-transaction commits of [`MongoTarget`].
    pub(crate) async fn write_in_transaction(
        &self,
        session: &mut ClientSession,
        entry: &AuditEntry,
    ) -> Result<(), WriteFailure> {
        let res = self
            .reserve(Some(&mut *session), entry.fencing_token)
            .await?;
        let (stamped, history_doc) = Self::stamped(entry, &res)?;
        self.inner
            .history
            .insert_one(history_doc.clone())
            .session(&mut *session)
            .await
            .map_err(driver("insert history"))?;
        let current = self
            .inner
            .current
            .find_one(doc! { "_id": &entry.change_id })
            .session(&mut *session)
            .await
            .map_err(driver("read current state"))?;
        let supersedes = match &current {
            None => true,
            Some(doc) => stamped.supersedes(&self.decode_current(doc)?),
        };
        if supersedes {
            let mut doc = history_doc;
            doc.insert("_id", &entry.change_id);
            self.inner
                .current
                .replace_one(doc! { "_id": &entry.change_id }, doc)
                .upsert(true)
                .session(&mut *session)
                .await
                .map_err(driver("write current state"))?;
            let before = match &current {
                Some(doc) => Some(self.decode_current(doc)?),
                None => None,
            };
            self.move_summary(session, before.as_ref(), &stamped)
                .await?;
        }
        Ok(())
    }

    /// A session with a transaction started, with the store's concerns.
    async fn begin(&self) -> Result<ClientSession, StoreError> {
        let mut session = self
            .inner
            .client
            .start_session()
            .await
            .map_err(self.backend("start session"))?;
        session
            .start_transaction()
            .read_concern(self.inner.read_concern.clone())
            .write_concern(self.inner.write_concern.clone())
            .await
            .map_err(self.backend("start transaction"))?;
        Ok(session)
    }

    /// Moves the applied-set summary in the fence document by what the
    /// current-state document held `before` and holds now, in the same
    /// transaction. A summary that was never started (see
    /// [`start_summary`](Self::start_summary)) stays absent: unknown.
    async fn move_summary(
        &self,
        session: &mut ClientSession,
        before: Option<&AuditEntry>,
        now: &AuditEntry,
    ) -> Result<(), WriteFailure> {
        use flamingock_core::summary::{applied_term, counts_as_applied};
        let applied = |e: &AuditEntry| i64::from(counts_as_applied(e.state));
        let (rows, delta, old_term) = match before {
            None => (1_i64, applied(now), 0),
            Some(b) => (0, applied(now) - applied(b), applied_term(b)),
        };
        self.inner
            .fence
            .update_one(
                doc! { "_id": FENCE_ID, SUMMARY_ROWS: { "$exists": true } },
                doc! {
                    "$inc": { SUMMARY_ROWS: rows, SUMMARY_APPLIED: delta },
                    "$bit": { SUMMARY_DIGEST: { "xor": old_term ^ applied_term(now) } },
                },
            )
            .session(&mut *session)
            .await
            .map_err(driver("update the summary"))?;
        Ok(())
    }

    /// Starts the summary at zero when the store has no current state yet
    /// (a new store), in one transaction with that check; a store with
    /// entries and no summary (made by an earlier version) keeps none.
    async fn start_summary(&self) -> Result<(), StoreError> {
        for attempt in 1..=10_u32 {
            let mut session = self.begin().await?;
            let result: Result<(), DriverError> = async {
                let fence = self
                    .inner
                    .fence
                    .find_one(doc! { "_id": FENCE_ID })
                    .session(&mut session)
                    .await?;
                if fence.as_ref().is_some_and(|f| f.contains_key(SUMMARY_ROWS)) {
                    return Ok(());
                }
                let any = self
                    .inner
                    .current
                    .find_one(doc! {})
                    .session(&mut session)
                    .await?;
                if any.is_some() {
                    return Ok(());
                }
                self.inner
                    .fence
                    .update_one(
                        doc! { "_id": FENCE_ID },
                        doc! { "$set": { SUMMARY_ROWS: 0_i64, SUMMARY_APPLIED: 0_i64, SUMMARY_DIGEST: 0_i64 } },
                    )
                    .upsert(true)
                    .session(&mut session)
                    .await?;
                Ok(())
            }
            .await;
            let result = match result {
                Ok(()) => tx::commit(&mut session).await,
                Err(e) => {
                    let _ = session.abort_transaction().await;
                    Err(e)
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e)
                    if (e.contains_label(TRANSIENT_TRANSACTION_ERROR)
                        || codec::is_duplicate_key(&e))
                        && attempt < 10 =>
                {
                    tokio::time::sleep(tx::backoff(attempt)).await;
                }
                Err(e) => return Err(self.backend("start the summary")(e)),
            }
        }
        Ok(())
    }

    /// Turns a `Fenced { fence: 0 }` placeholder into the fence actually recorded.
    pub(crate) async fn resolve_fenced(&self, failure: WriteFailure, token: u64) -> StoreError {
        match failure {
            WriteFailure::Fenced { .. } => match self.read_fence().await {
                Ok(fence) if fence > token => StoreError::Fenced {
                    store: self.inner.describe.clone(),
                    token,
                    fence,
                },
                Ok(fence) => StoreError::Backend {
                    store: self.inner.describe.clone(),
                    operation: "check fence",
                    source: format!(
                        "the conditional fence write failed but the fence ({fence}) is not above \
                         token {token}; retry"
                    )
                    .into(),
                },
                Err(e) => e,
            },
            other => other.into_store_error(&self.inner.describe, token),
        }
    }

    async fn append_transactional(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let token = entry.fencing_token;
        let deadline = Instant::now() + self.inner.retry_for;
        let mut attempt = 0_u32;
        loop {
            attempt += 1;
            let mut session = self.begin().await?;
            let failure = match self.write_in_transaction(&mut session, entry).await {
                Ok(()) => match tx::commit(&mut session).await {
                    Ok(()) => return Ok(()),
                    Err(error) => WriteFailure::Driver {
                        operation: "commit",
                        error,
                    },
                },
                Err(f) => {
                    // Best effort: the server also aborts on session end.
                    let _ = session.abort_transaction().await;
                    f
                }
            };
            // Write conflicts between appenders resolve in milliseconds and
            // are retried until the deadline; an unreachable server is given
            // a few attempts only, so that a dead server fails the run soon.
            let retry = if failure.is_unreachable() {
                attempt < UNREACHABLE_ATTEMPTS
            } else {
                failure.is_transient() && Instant::now() < deadline
            };
            if retry {
                debug!(attempt, change_id = %entry.change_id, "transient transaction error; retrying the append");
                tokio::time::sleep(tx::backoff(attempt)).await;
                continue;
            }
            return Err(self.resolve_fenced(failure, token).await);
        }
    }

    /// Without transactions: fence check + sequence (one conditional
    /// single-document write), history (marked pending), then the
    /// current-state document with a conditional write that never replaces
    /// a state written under a higher token, then the pending mark is cleared.
    async fn append_without_transaction(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let token = entry.fencing_token;
        let store = &self.inner.describe;
        let mut attempt = 0;
        let res = loop {
            attempt += 1;
            match self.reserve(None, token).await {
                Ok(r) => break r,
                Err(WriteFailure::Conflict(_)) if attempt < 5 => {
                    tokio::time::sleep(tx::backoff(attempt)).await;
                }
                Err(f) => return Err(self.resolve_fenced(f, token).await),
            }
        };
        let (stamped, mut history_doc) =
            Self::stamped(entry, &res).map_err(|f| f.into_store_error(store, token))?;
        let history_id = mongodb::bson::oid::ObjectId::new();
        history_doc.insert("_id", history_id);
        history_doc.insert(field::PENDING, true);
        self.inner
            .history
            .insert_one(history_doc.clone())
            .await
            .map_err(self.backend("insert history"))?;
        history_doc.remove(field::PENDING);
        history_doc.insert("_id", &entry.change_id);
        let t = codec::u64_to_bson(token).unwrap_or(Bson::Int64(i64::MAX));
        let at = codec::to_bson_date(stamped.created_at);
        let rank = i32::from(stamped.state.rank());
        let filter = doc! {
            "_id": &entry.change_id,
            field::FENCING_TOKEN: { "$lte": t },
            "$or": [
                { field::CREATED_AT: { "$lt": at } },
                { field::CREATED_AT: at, field::RANK: { "$lt": rank } },
            ],
        };
        match self
            .inner
            .current
            .replace_one(filter, history_doc)
            .upsert(true)
            .await
        {
            Ok(_) => {}
            Err(e) if codec::is_duplicate_key(&e) => {
                // Not written: either the stored state supersedes ours, or it
                // was written under a higher token, i.e. a newer lease holder
                // already acted on this change: then ours is fenced.
                let cur = self
                    .inner
                    .current
                    .find_one(doc! { "_id": &entry.change_id })
                    .await
                    .map_err(self.backend("read current state"))?;
                if let Some(cur) = cur {
                    let cur = self
                        .decode_current(&cur)
                        .map_err(|f| f.into_store_error(store, token))?;
                    if cur.fencing_token > token {
                        self.inner
                            .history
                            .delete_one(doc! { "_id": history_id })
                            .await
                            .map_err(self.backend("withdraw fenced history entry"))?;
                        return Err(StoreError::Fenced {
                            store: store.clone(),
                            token,
                            fence: cur.fencing_token,
                        });
                    }
                }
            }
            Err(e) => return Err(self.backend("write current state")(e)),
        }
        if let Err(e) = self
            .inner
            .history
            .update_one(
                doc! { "_id": history_id },
                doc! { "$unset": { field::PENDING: "" } },
            )
            .await
        {
            // Harmless: snapshot() folds pending entries in.
            warn!(error = %e, "could not clear the pending mark of a history entry");
        }
        Ok(())
    }

    /// Registers the session of a shared-transaction change, so that the
    /// next lease holder can abort its transaction (see [`crate::sessions`]).
    pub(crate) async fn register_session(&self, lsid: &Document) -> Result<(), DriverError> {
        sessions::register(&self.inner.sessions, lsid).await
    }

    /// Forgets a session once its transaction has ended.
    pub(crate) async fn unregister_session(&self, lsid: &Document) {
        sessions::unregister(&self.inner.sessions, lsid).await;
    }

    /// Called when this runner claims the fence, i.e. holds the lock and has
    /// not started any change yet (see [`crate::sessions`]).
    async fn kill_stale_transactions_bounded(&self) {
        sessions::kill_registered(&self.inner.client, &self.inner.sessions).await;
    }

    async fn read_all(
        &self,
        coll: &Collection<Document>,
        name: &str,
        filter: Document,
        sort: Document,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let docs: Vec<Document> = coll
            .find(filter)
            .sort(sort)
            .await
            .map_err(self.backend("read audit"))?
            .try_collect()
            .await
            .map_err(self.backend("read audit"))?;
        docs.iter()
            .map(|d| {
                let r = Reader::new(name, d);
                codec::decode_entry(&r).map_err(|detail| self.malformed(r.what.clone(), detail))
            })
            .collect()
    }
}

#[async_trait]
impl AuditStore for MongoAuditStore {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn store_id(&self) -> &str {
        &self.inner.id
    }

    async fn prepare(&self) -> Result<(), StoreError> {
        if self.inner.auto_create {
            self.create_collections().await?;
        } else {
            self.check_collections().await?;
        }
        if self.transactions() {
            self.start_summary().await?;
        }
        Ok(())
    }

    async fn claim_fence(&self) -> Result<u64, StoreError> {
        // First free what a dead or stalled runner's transaction holds (the
        // fence document among others): otherwise this write would wait on
        // it until the server aborts that transaction.
        self.kill_stale_transactions_bounded().await;
        // Two fresh upserts can race on an empty collection: the loser gets
        // a duplicate key and simply tries again.
        for _ in 0..5 {
            let res = self
                .inner
                .fence
                .find_one_and_update(
                    doc! { "_id": FENCE_ID },
                    doc! { "$inc": { "fence": 1_i64 } },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match res {
                Ok(Some(doc)) => {
                    let r = Reader::new(&self.inner.names.fence, &doc);
                    let epoch = match r.opt_i64("fence") {
                        Ok(Some(v)) => u64::try_from(v).map_err(|_| {
                            self.malformed(r.what.clone(), format!("negative fence {v}"))
                        })?,
                        Ok(None) => {
                            return Err(self.malformed(r.what.clone(), "no fence after $inc".into()))
                        }
                        Err(detail) => return Err(self.malformed(r.what.clone(), detail)),
                    };
                    // A stale runner may have begun a transaction between the
                    // kill above and the claim: its commit is fenced now, and
                    // this frees its documents early.
                    self.kill_stale_transactions_bounded().await;
                    return Ok(epoch);
                }
                Ok(None) => {}
                Err(e) if codec::is_duplicate_key(&e) => {}
                // TypeMismatch: `$inc` met a fence that is not a number.
                Err(e) if codec::error_code(&e) == Some(14) => {
                    return Err(self.malformed(
                        format!("document '{FENCE_ID}' of {}", self.inner.names.fence),
                        format!("the fence is not a number ({e})"),
                    ))
                }
                Err(e) => return Err(self.backend("claim the fence")(e)),
            }
        }
        Err(StoreError::Backend {
            store: self.inner.describe.clone(),
            operation: "claim the fence",
            source: "the fence document kept changing under concurrent claims; giving up".into(),
        })
    }

    async fn fence(&self) -> Result<u64, StoreError> {
        self.read_fence().await
    }

    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        if self.transactions() {
            self.append_transactional(entry).await
        } else {
            self.append_without_transaction(entry).await
        }
    }

    async fn summary(&self) -> Result<Option<AuditSummary>, StoreError> {
        // Without transactions the current state and the fence document
        // cannot move together: no summary.
        if !self.transactions() {
            return Ok(None);
        }
        let doc = self
            .inner
            .fence
            .find_one(doc! { "_id": FENCE_ID })
            .projection(doc! { SUMMARY_ROWS: 1, SUMMARY_APPLIED: 1, SUMMARY_DIGEST: 1 })
            .await
            .map_err(self.backend("read the summary"))?;
        let Some(doc) = doc else { return Ok(None) };
        let r = Reader::new(&self.inner.names.fence, &doc);
        // A field of another type counts as absent: read the snapshot.
        let field = |name| r.opt_i64(name).ok().flatten();
        Ok(AuditSummary::from_stored(
            field(SUMMARY_ROWS),
            field(SUMMARY_APPLIED),
            field(SUMMARY_DIGEST),
        ))
    }

    async fn snapshot(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let current = self
            .read_all(
                &self.inner.current,
                &self.inner.names.current,
                doc! {},
                doc! { "_id": 1 },
            )
            .await?;
        if self.transactions() {
            return Ok(current);
        }
        // Without transactions an append may have stopped between its history
        // and current-state writes: fold such entries in (usually none; the
        // query uses the sparse `pending` index).
        let pending = self
            .read_all(
                &self.inner.history,
                &self.inner.names.history,
                doc! { field::PENDING: true },
                doc! { field::SEQ: 1 },
            )
            .await?;
        if pending.is_empty() {
            return Ok(current);
        }
        Ok(reduce_snapshot(current.into_iter().chain(pending)))
    }

    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let mut q = Document::new();
        if let Some(c) = &filter.change_id {
            q.insert(field::CHANGE_ID, c);
        }
        if let Some(since) = filter.since {
            q.insert(
                field::CREATED_AT,
                // Stored times are whole milliseconds: round `since` up, so
                // that an entry a fraction of a millisecond before it is left out.
                doc! { "$gte": mongodb::bson::DateTime::from_millis(
                    since.timestamp_millis()
                        + i64::from(since.timestamp_subsec_nanos() % 1_000_000 != 0)
                ) },
            );
        }
        self.read_all(
            &self.inner.history,
            &self.inner.names.history,
            q,
            doc! { field::SEQ: 1, "_id": 1 },
        )
        .await
    }

    fn default_lock(&self) -> Option<Arc<dyn LockProvider>> {
        Some(Arc::new(self.lock()))
    }

    fn stall_hint(&self) -> Option<String> {
        Some(STALL_HINT.to_owned())
    }
}

/// What to check when the server does not answer in time.
pub(crate) const STALL_HINT: &str =
    "check that the server is reachable; a transaction left open by a killed runner blocks \
     writes to the documents it touched until the server aborts it (MongoDB: after \
     transactionLifetimeLimitSeconds, 60 s by default; the next lock holder also kills the \
     sessions of such transactions when it claims the fence)";

/// The shared-transaction write: the same fence check, history insert and
/// current-state update as [`AuditStore::append`], inside the transaction
/// open on the change's session. A conditional fence write that matched
/// nothing is resolved against the fence actually recorded (read outside
/// the transaction), so a rejection names the newer epoch.
impl flamingock_core::AppendInTransaction for MongoAuditStore {
    type Transaction = ClientSession;

    async fn append_in_transaction(
        &self,
        tx: &mut ClientSession,
        entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        match self.write_in_transaction(tx, entry).await {
            Ok(()) => Ok(()),
            Err(f) if f.is_transient() => {
                Err(f.into_store_error(&self.inner.describe, entry.fencing_token))
            }
            Err(f) => Err(self.resolve_fenced(f, entry.fencing_token).await),
        }
    }
}
