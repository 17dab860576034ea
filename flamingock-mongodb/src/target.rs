//! MongoDB as a target system: changes run in a client-session transaction.

use flamingock_core::{
    CommitWith, ContextMode, Marker, MarkerSettings, SharedAudit, TargetCapabilities, TargetError,
    TargetSystem,
};
use mongodb::bson::{doc, Document};
use mongodb::error::{Error as DriverError, TRANSIENT_TRANSACTION_ERROR};
use mongodb::options::{ReadConcern, WriteConcern};
use mongodb::{Client, ClientSession, Collection, Database};

use crate::codec::{self, Reader};
use crate::sessions;
use crate::store::MongoAuditStore;
use crate::topology::{self, Transactions};
use crate::tx;

/// What a change of a [`MongoTarget`] receives: the database and the client
/// session. In a transactional context the session has a transaction open:
/// pass it to every operation (`.session(ctx.session())`), or the operation
/// runs outside the transaction.
///
/// ```no_run
/// # async fn f(ctx: &mut flamingock_mongodb::MongoContext) -> Result<(), mongodb::error::Error> {
/// use mongodb::bson::{doc, Document};
/// ctx.db()
///     .collection::<Document>("users")
///     .insert_one(doc! { "email": "ana@example.com" })
///     .session(ctx.session())
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MongoContext {
    db: Database,
    session: ClientSession,
    transaction: bool,
}

impl MongoContext {
    /// The target's database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The session: pass it to every operation with `.session(ctx.session())`.
    pub fn session(&mut self) -> &mut ClientSession {
        &mut self.session
    }

    /// The database and the session at once, for database-level actions that
    /// borrow the database while they run (`create_collection`, `run_command`...):
    ///
    /// ```no_run
    /// # async fn f(ctx: &mut flamingock_mongodb::MongoContext) -> Result<(), mongodb::error::Error> {
    /// let (db, session) = ctx.split();
    /// db.create_collection("audit_log").capped(true).size(1 << 20).session(session).await?;
    /// # Ok(()) }
    /// ```
    pub fn split(&mut self) -> (&Database, &mut ClientSession) {
        (&self.db, &mut self.session)
    }

    /// Whether a transaction is open on the session (false in a
    /// non-transactional context, e.g. for index builds).
    pub fn in_transaction(&self) -> bool {
        self.transaction
    }
}

/// A MongoDB database as a target system.
///
/// * [`MongoAuditStore::shared_target`]: same client and database as the
///   audit store; each change and its APPLIED entry (with the fence check)
///   commit in one session transaction (shared-transaction strategy).
/// * [`MongoTarget::builder`]: another client or database; the change
///   commits in its own transaction together with a marker document in
///   `flamingock_markers` (separate transaction with marker), unless
///   [`marker(false)`](MongoTargetBuilder::marker).
///
/// ```no_run
/// # async fn f(client: mongodb::Client) -> Result<(), flamingock_core::TargetError> {
/// use flamingock_mongodb::MongoTarget;
/// let target = MongoTarget::builder("catalog", client, "catalog").build().await?;
/// # let _ = target; Ok(()) }
/// ```
///
/// On a server without transactions (a standalone `mongod`) the target says
/// so in its capabilities, and the runner refuses, before anything runs,
/// every change not declared `.transactional(false)`.
#[derive(Debug, Clone)]
pub struct MongoTarget {
    id: String,
    db: Database,
    client: Client,
    shared: Option<SharedAudit<MongoAuditStore>>,
    marker: Option<Collection<Document>>,
    /// Sessions of this separate target's open transactions (see [`crate::sessions`]).
    sessions: Option<Collection<Document>>,
    transactions: Transactions,
    read_concern: ReadConcern,
    write_concern: WriteConcern,
}

/// Default prefix of a separate target's collections: markers in
/// `flamingock_markers`, open transactions' sessions in
/// `flamingock_target_sessions`.
pub const DEFAULT_TARGET_PREFIX: &str = "flamingock";

/// Configures a [`MongoTarget`]; from [`MongoTarget::builder`] or
/// [`MongoAuditStore::shared_target`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MongoTargetBuilder {
    id: String,
    client: Client,
    database: String,
    shared: Option<MongoAuditStore>,
    markers: MarkerSettings,
    assume_no_transactions: bool,
    read_concern: Option<ReadConcern>,
    write_concern: Option<WriteConcern>,
}

impl MongoTargetBuilder {
    /// Prefix of the target's own collections (default `flamingock`):
    /// markers in `<prefix>_markers`, the sessions of its open transactions
    /// in `<prefix>_target_sessions`. A shared target keeps no marker:
    /// setting it there is an error at `build`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.markers.set_prefix(prefix);
        self
    }

    /// Whether the target keeps markers (default `true`; a shared target
    /// never needs them, and `marker(true)` on it is an error at `build`).
    /// Without them a crash between the change's commit and its APPLIED
    /// entry is left for an operator (or a retry) instead of being resolved
    /// by itself.
    pub fn marker(mut self, yes: bool) -> Self {
        self.markers.set_marker(yes);
        self
    }

    /// Behave as on a server without transactions. For tests.
    pub fn assume_no_transactions(mut self, yes: bool) -> Self {
        self.assume_no_transactions = yes;
        self
    }

    /// Read concern of the change's transaction (default `majority`; a
    /// shared target's default is the store's).
    pub fn read_concern(mut self, rc: ReadConcern) -> Self {
        self.read_concern = Some(rc);
        self
    }

    /// Write concern of the change's transaction (default `majority`; a
    /// shared target's default is the store's).
    pub fn write_concern(mut self, wc: WriteConcern) -> Self {
        self.write_concern = Some(wc);
        self
    }

    /// Asks the server whether it runs transactions (`hello`; a shared
    /// target takes the store's answer) and builds the target.
    ///
    /// # Errors
    /// [`TargetError::Backend`] when the server cannot be reached;
    /// [`TargetError::Unsupported`] for an invalid prefix or marker settings
    /// on a shared target.
    pub async fn build(self) -> Result<MongoTarget, TargetError> {
        let id = self.id;
        let invalid = |detail: String| TargetError::Unsupported {
            target: id.clone(),
            detail,
        };
        let off = |whose: &str| {
            Transactions::Unavailable(format!(
                "transactions were turned off for this {whose} (assume_no_transactions): {}",
                topology::ADVICE
            ))
        };
        if let Some(store) = self.shared {
            self.markers.check_shared(&id)?;
            let inner = &store.inner;
            return Ok(MongoTarget {
                id,
                db: inner.client.database(inner.db.name()),
                client: inner.client.clone(),
                marker: None,
                sessions: None,
                transactions: match self.assume_no_transactions {
                    true => off("target"),
                    false => inner.transactions.clone(),
                },
                read_concern: self
                    .read_concern
                    .unwrap_or_else(|| inner.read_concern.clone()),
                write_concern: self
                    .write_concern
                    .unwrap_or_else(|| inner.write_concern.clone()),
                shared: Some(SharedAudit::new(store)),
            });
        }
        let (prefix, marker) = self.markers.separate(DEFAULT_TARGET_PREFIX);
        flamingock_core::names::plain_identifier("database", &self.database, &['-'], 63)
            .and_then(|()| {
                flamingock_core::names::plain_identifier("collection prefix", &prefix, &[], 100)
            })
            .map_err(|e| invalid(format!("invalid configuration: {e}")))?;
        let transactions = match self.assume_no_transactions {
            true => off("target"),
            false => topology::detect(&self.client)
                .await
                .map_err(|e| TargetError::Backend {
                    target: id.clone(),
                    operation: "handshake (hello)",
                    source: crate::explain::boxed(e),
                })?,
        };
        let db = self.client.database(&self.database);
        Ok(MongoTarget {
            marker: marker.then(|| db.collection(&format!("{prefix}_markers"))),
            sessions: Some(db.collection(&format!("{prefix}_target_sessions"))),
            id,
            db,
            client: self.client,
            shared: None,
            transactions,
            read_concern: self.read_concern.unwrap_or_else(ReadConcern::majority),
            write_concern: self.write_concern.unwrap_or_else(WriteConcern::majority),
        })
    }
}

impl MongoTarget {
    /// A builder for a target on database `database` of `client`, keeping
    /// markers in `flamingock_markers`.
    pub fn builder(
        id: impl Into<String>,
        client: Client,
        database: impl Into<String>,
    ) -> MongoTargetBuilder {
        MongoTargetBuilder {
            id: id.into(),
            client,
            database: database.into(),
            shared: None,
            markers: MarkerSettings::default(),
            assume_no_transactions: false,
            read_concern: None,
            write_concern: None,
        }
    }

    pub(crate) fn shared(id: String, store: MongoAuditStore) -> MongoTargetBuilder {
        let mut builder = Self::builder(
            id,
            store.inner.client.clone(),
            store.inner.db.name().to_owned(),
        );
        builder.shared = Some(store);
        builder
    }

    /// The target's database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn backend(&self, operation: &'static str) -> impl FnOnce(DriverError) -> TargetError + '_ {
        move |e| TargetError::Backend {
            target: self.id.clone(),
            operation,
            source: crate::explain::boxed(e),
        }
    }

    /// Commits; a transient error at commit means nothing was committed.
    async fn commit_session(&self, session: &mut ClientSession) -> Result<(), TargetError> {
        match tx::commit(session).await {
            Ok(()) => Ok(()),
            Err(e) if e.contains_label(TRANSIENT_TRANSACTION_ERROR) => {
                Err(TargetError::NotCommitted {
                    target: self.id.clone(),
                    source: crate::explain::boxed(e),
                })
            }
            // Outcome unknown (connection lost during commit...).
            Err(e) => Err(self.backend("commit")(e)),
        }
    }

    async fn commit_inner(
        &self,
        ctx: &mut MongoContext,
        with: CommitWith<'_>,
    ) -> Result<(), TargetError> {
        if !ctx.transaction {
            return match with {
                CommitWith::Nothing => Ok(()),
                _ => Err(TargetError::Unsupported {
                    target: self.id.clone(),
                    detail: "asked to commit an audit entry or marker with a context that has \
                             no transaction"
                        .into(),
                }),
            };
        }
        match with {
            CommitWith::Audit(entry) => {
                let Some(shared) = &self.shared else {
                    let _ = ctx.session.abort_transaction().await;
                    return Err(TargetError::Unsupported {
                        target: self.id.clone(),
                        detail: "asked to commit an audit entry but this target shares no audit \
                                 store: build it with MongoAuditStore::shared_target"
                            .into(),
                    });
                };
                if let Err(e) = shared.append(&self.id, &mut ctx.session, entry).await {
                    let _ = ctx.session.abort_transaction().await;
                    return Err(e);
                }
            }
            CommitWith::Marker(m) => {
                let Some(coll) = &self.marker else {
                    let _ = ctx.session.abort_transaction().await;
                    return Err(TargetError::Unsupported {
                        target: self.id.clone(),
                        detail: "asked to write a marker but markers are off for this target"
                            .into(),
                    });
                };
                let token = codec::u64_to_bson(m.fencing_token)
                    .unwrap_or(mongodb::bson::Bson::Int64(i64::MAX));
                let res = coll
                    .replace_one(
                        doc! { "_id": &m.change_id },
                        doc! { "_id": &m.change_id, "run_id": &m.run_id, "fencing_token": token },
                    )
                    .upsert(true)
                    .session(&mut ctx.session)
                    .await;
                if let Err(e) = res {
                    return Err(self.not_committed(&mut ctx.session, e).await);
                }
            }
            _ => {}
        }
        self.commit_session(&mut ctx.session).await
    }

    async fn unregister(&self, ctx: &MongoContext) {
        if !ctx.transaction {
            return;
        }
        if let Some(store) = &self.shared {
            store.store().unregister_session(ctx.session.id()).await;
        } else if let Some(coll) = &self.sessions {
            sessions::unregister(coll, ctx.session.id()).await;
        }
    }

    /// A failure before commit: the transaction is aborted, nothing committed.
    async fn not_committed(&self, session: &mut ClientSession, e: DriverError) -> TargetError {
        let _ = session.abort_transaction().await;
        TargetError::NotCommitted {
            target: self.id.clone(),
            source: crate::explain::boxed(e),
        }
    }
}

impl flamingock_core::ChangeContext for MongoContext {
    type Target = MongoTarget;
}

impl TargetSystem for MongoTarget {
    type Context = MongoContext;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        let mut caps = flamingock_core::shared_audit::transactional_capabilities(
            self.shared.as_ref(),
            self.marker.is_some(),
        );
        if let Transactions::Unavailable(why) = &self.transactions {
            caps = caps.transactions_unavailable(why.clone());
        }
        caps
    }

    async fn begin(&self, mode: ContextMode) -> Result<MongoContext, TargetError> {
        let mut session = self
            .client
            .start_session()
            .await
            .map_err(self.backend("start session"))?;
        if mode == ContextMode::Transaction {
            if let Transactions::Unavailable(why) = &self.transactions {
                return Err(TargetError::Unsupported {
                    target: self.id.clone(),
                    detail: why.clone(),
                });
            }
            session
                .start_transaction()
                .read_concern(self.read_concern.clone())
                .write_concern(self.write_concern.clone())
                .await
                .map_err(self.backend("start transaction"))?;
            // Lets the next lease holder abort this transaction should this
            // runner die or lose its lease mid-change (see the crate docs).
            if let Some(store) = &self.shared {
                store
                    .store()
                    .register_session(session.id())
                    .await
                    .map_err(self.backend("register transaction session"))?;
            } else if let Some(coll) = &self.sessions {
                sessions::register(coll, session.id())
                    .await
                    .map_err(self.backend("register transaction session"))?;
            }
        }
        Ok(MongoContext {
            db: self.db.clone(),
            session,
            transaction: mode == ContextMode::Transaction,
        })
    }

    async fn commit(&self, mut ctx: MongoContext, with: CommitWith<'_>) -> Result<(), TargetError> {
        let res = self.commit_inner(&mut ctx, with).await;
        self.unregister(&ctx).await;
        res
    }

    async fn abort(&self, mut ctx: MongoContext) -> Result<(), TargetError> {
        let res = if ctx.transaction {
            ctx.session
                .abort_transaction()
                .await
                .map_err(self.backend("abort transaction"))
        } else {
            Ok(())
        };
        self.unregister(&ctx).await;
        res
    }

    async fn on_claimed(&self) {
        // The shared target's sessions are killed by the store's fence claim.
        if let Some(coll) = &self.sessions {
            sessions::kill_registered(&self.client, coll).await;
        }
    }

    async fn marker(&self, change_id: &str) -> Result<Option<Marker>, TargetError> {
        let Some(coll) = &self.marker else {
            return Ok(None);
        };
        let Some(d) = coll
            .find_one(doc! { "_id": change_id })
            .await
            .map_err(self.backend("read marker"))?
        else {
            return Ok(None);
        };
        let r = Reader::new(coll.name(), &d);
        let read = || -> Result<Marker, String> {
            Ok(Marker {
                change_id: change_id.to_owned(),
                run_id: r.str("run_id")?,
                fencing_token: r.u64("fencing_token")?,
            })
        };
        read().map(Some).map_err(|detail| TargetError::Backend {
            target: self.id.clone(),
            operation: "read marker",
            source: format!("malformed marker, {}: {detail}", r.what).into(),
        })
    }

    async fn clear_marker(&self, change_id: &str) -> Result<(), TargetError> {
        if let Some(coll) = &self.marker {
            coll.delete_one(doc! { "_id": change_id })
                .await
                .map_err(self.backend("clear marker"))?;
        }
        Ok(())
    }
}
