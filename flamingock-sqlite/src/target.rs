//! The transactional SQLite target and the context its changes receive.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use chrono::Utc;
use flamingock_core::{
    AuditStore, CommitWith, ContextMode, Marker, MarkerSettings, SharedAudit, TargetCapabilities,
    TargetError, TargetSystem,
};
use sqlx::error::ErrorKind;
use sqlx::pool::PoolConnection;
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::OnceCell;

use crate::connect::{self, PoolSettings};
use crate::schema::{self, ident, q, EnsureError, TableDef};
use crate::source::{Source, SqliteSource};
use crate::store::{fmt_ts, SqliteAuditStore, DEFAULT_PREFIX};

/// Busy timeout of one `begin` attempt on a target file this crate opened.
const TARGET_BUSY_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(5);

/// A SQLite database as a target system: changes receive a [`SqliteContext`]
/// (a connection inside a `BEGIN IMMEDIATE` transaction) and commit or roll
/// back as a whole. SQLite DDL is transactional too, so `CREATE TABLE` and
/// `ALTER TABLE` changes are all-or-nothing.
///
/// * [`SqliteAuditStore::shared_target`] gives a target on the store's own database:
///   the change and its APPLIED audit entry (with the fence check) commit in
///   the **same** transaction, on the **same** connection (a second
///   connection would wait forever for the write lock this one holds).
/// * [`SqliteTarget::builder`] gives a target on another database: separate
///   transaction, with a marker row (table `flamingock_marker`) written in
///   the change's transaction so the next run can tell whether it committed;
///   [`marker(false)`](SqliteTargetBuilder::marker) turns markers off.
///
/// ```no_run
/// use flamingock_sqlite::{SqliteAuditStore, SqliteTarget};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteAuditStore::connect("audit.db").await?;
/// let same_db = store.shared_target("app-db").build().await?;
/// let elsewhere = SqliteTarget::builder("reports-db", "reports.db").build().await?;
/// # let _ = (same_db, elsewhere);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteTarget {
    id: String,
    pool: SqlitePool,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Shared(SharedAudit<SqliteAuditStore>),
    Separate { markers: Option<Arc<Markers>> },
}

struct Markers {
    table: TableDef,
    ready: OnceCell<()>,
    put: Arc<str>,
    get: Arc<str>,
    delete: Arc<str>,
}

impl Markers {
    fn new(prefix: &str) -> Arc<Self> {
        let table = schema::marker_table(prefix);
        let t = ident(&table.name);
        Arc::new(Markers {
            put: format!(
                "INSERT INTO {t} (change_id, run_id, fencing_token, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (change_id) DO UPDATE SET run_id = excluded.run_id, \
                 fencing_token = excluded.fencing_token, created_at = excluded.created_at"
            )
            .into(),
            get: format!("SELECT run_id, fencing_token FROM {t} WHERE change_id = ?1").into(),
            delete: format!("DELETE FROM {t} WHERE change_id = ?1").into(),
            table,
            ready: OnceCell::new(),
        })
    }
}

impl std::fmt::Debug for SqliteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("SqliteTarget");
        d.field("id", &self.id);
        match &self.kind {
            Kind::Shared(shared) => d.field("shares_audit_store", &shared.store().store_id()),
            Kind::Separate { markers } => d.field(
                "marker_table",
                &markers.as_ref().map(|m| m.table.name.as_str()),
            ),
        };
        d.finish_non_exhaustive()
    }
}

/// Configures a [`SqliteTarget`]; from [`SqliteTarget::builder`] or
/// [`SqliteAuditStore::shared_target`].
#[derive(Debug)]
#[must_use]
pub struct SqliteTargetBuilder {
    id: String,
    source: Source,
    shared: Option<SqliteAuditStore>,
    markers: MarkerSettings,
}

impl SqliteTargetBuilder {
    /// The prefix of the marker table, `<prefix>_marker` (default
    /// `flamingock`). A shared target keeps no marker: setting it there is an
    /// error at `build`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.markers.set_prefix(prefix);
        self
    }

    /// Whether the target keeps a marker table (default `true`; a shared
    /// target never needs one, and `marker(true)` on it is an error at
    /// `build`). Without it a crash between the commit and the APPLIED entry
    /// needs an operator (or `AlwaysRetry`).
    pub fn marker(mut self, yes: bool) -> Self {
        self.markers.set_marker(yes);
        self
    }

    /// Opens the database when given a path or URL, with the same settings
    /// as the audit store (WAL, foreign keys on) except a 5 s busy timeout
    /// per attempt: when another connection holds the file's write lock
    /// (another runner inside a change on it, or stopped or paused there),
    /// `begin` reports the target busy and the runner waits for it like for
    /// a held lock, saying so, up to the lock's acquire timeout. A pool you
    /// built is used as it is.
    pub async fn build(self) -> Result<SqliteTarget, TargetError> {
        let id = self.id;
        let invalid = |detail: String| TargetError::Unsupported {
            target: id.clone(),
            detail,
        };
        if let Some(store) = self.shared {
            self.markers.check_shared(&id)?;
            return Ok(SqliteTarget {
                id,
                pool: store.pool().clone(),
                kind: Kind::Shared(SharedAudit::new(store)),
            });
        }
        let (prefix, marker) = self.markers.separate(DEFAULT_PREFIX);
        if let Err(e) = flamingock_core::names::plain_identifier("table prefix", &prefix, &[], 100)
        {
            return Err(invalid(format!("invalid marker table configuration: {e}")));
        }
        let pool = match self.source {
            Source::Pool(pool) => pool,
            Source::Location(loc) => {
                let settings = PoolSettings {
                    busy_timeout: TARGET_BUSY_ATTEMPT,
                    ..PoolSettings::default()
                };
                let failed = |e| TargetError::Backend {
                    target: format!("{id} ({})", connect::display_location(&loc)),
                    operation: "open the database",
                    source: Box::new(e),
                };
                let pool = connect::open_pool(&loc, settings).await.map_err(failed)?;
                // A target is opened to be written: WAL now, as the store does on prepare.
                connect::ensure_wal(&pool, connect::DEFAULT_BUSY_TIMEOUT)
                    .await
                    .map_err(failed)?;
                pool
            }
        };
        Ok(SqliteTarget {
            id,
            pool,
            kind: Kind::Separate {
                markers: marker.then(|| Markers::new(&prefix)),
            },
        })
    }
}

impl SqliteTarget {
    /// A builder for a target on the database at `source` (a path, a
    /// `sqlite:` URL or a pool; see [`SqliteSource`]), separate from the
    /// audit store, keeping markers in table `flamingock_marker` (created on
    /// first use).
    pub fn builder(id: impl Into<String>, source: impl Into<SqliteSource>) -> SqliteTargetBuilder {
        SqliteTargetBuilder {
            id: id.into(),
            source: source.into().0,
            shared: None,
            markers: MarkerSettings::default(),
        }
    }

    pub(crate) fn shared(id: String, store: SqliteAuditStore) -> SqliteTargetBuilder {
        SqliteTargetBuilder {
            id,
            source: Source::Pool(store.pool().clone()),
            shared: Some(store),
            markers: MarkerSettings::default(),
        }
    }

    /// The pool changes run on.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn backend(&self, operation: &'static str, e: sqlx::Error) -> TargetError {
        TargetError::Backend {
            target: self.id.clone(),
            operation,
            source: Box::new(e),
        }
    }

    /// A busy file is a writer elsewhere, which the runner waits for.
    fn begin_error(&self, e: sqlx::Error) -> TargetError {
        if connect::is_busy(&e) {
            TargetError::Busy {
                target: self.id.clone(),
                detail: "another connection holds the database file's write lock (another \
                         runner inside a change on it, or stopped or paused there, or another \
                         program writing to it)"
                    .to_owned(),
            }
        } else {
            self.backend("begin a transaction", e)
        }
    }

    fn unsupported(&self, detail: &str) -> TargetError {
        TargetError::Unsupported {
            target: self.id.clone(),
            detail: detail.to_owned(),
        }
    }

    async fn markers(&self) -> Result<Option<&Markers>, TargetError> {
        let Kind::Separate {
            markers: Some(m), ..
        } = &self.kind
        else {
            return Ok(None);
        };
        m.ready
            .get_or_try_init(|| async {
                schema::ensure(&self.pool, &[&m.table], true)
                    .await
                    .map_err(|e| match e {
                        EnsureError::Db(e) if connect::is_busy(&e) => self.begin_error(e),
                        EnsureError::Db(e) => self.backend("prepare the marker table", e),
                        EnsureError::NotReady(t) => {
                            self.unsupported(&format!("marker table {t} is missing"))
                        }
                        EnsureError::WrongShape { table, missing } => self.unsupported(&format!(
                            "table {table} exists without the marker column(s) {}; choose \
                             another prefix with SqliteTargetBuilder::prefix()",
                            missing.join(", ")
                        )),
                    })
            })
            .await?;
        Ok(Some(m))
    }

    /// A commit error: a constraint checked at COMMIT (deferred foreign keys)
    /// means nothing was committed; anything else leaves the outcome unknown.
    fn commit_error(&self, e: sqlx::Error) -> TargetError {
        let refused =
            matches!(&e, sqlx::Error::Database(db) if !matches!(db.kind(), ErrorKind::Other));
        if refused {
            TargetError::NotCommitted {
                target: self.id.clone(),
                source: Box::new(e),
            }
        } else {
            self.backend("commit the transaction", e)
        }
    }
}

/// What a change of a [`SqliteTarget`] receives: a connection, inside the
/// change's transaction when the change is transactional.
///
/// It dereferences to [`SqliteConnection`], so `&mut **ctx` or
/// [`ctx.conn()`](SqliteContext::conn) is an sqlx executor:
///
/// ```
/// use flamingock_core::{Change, ChangeMeta, ChangeResult};
/// use flamingock_sqlite::{SqliteContext, SqliteTarget};
///
/// struct CreateUsers;
/// impl Change for CreateUsers {
///     type Target = SqliteTarget;
///     fn meta(&self) -> ChangeMeta { ChangeMeta::new("create-users").order("0001") }
///     async fn apply(&self, db: &mut SqliteContext) -> ChangeResult {
///         flamingock_sqlite::sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
///             .execute(db.conn())
///             .await?;
///         Ok(())
///     }
/// }
/// ```
///
/// Dropping it without a commit (a crash, a cancelled run) rolls the
/// transaction back.
pub struct SqliteContext {
    conn: Conn,
}

enum Conn {
    Tx(Transaction<'static, Sqlite>),
    Plain(PoolConnection<Sqlite>),
}

impl std::fmt::Debug for SqliteContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteContext")
            .field("transactional", &self.is_transactional())
            .finish_non_exhaustive()
    }
}

impl SqliteContext {
    /// The connection, as an sqlx executor.
    pub fn conn(&mut self) -> &mut SqliteConnection {
        self
    }

    /// Whether the change runs inside a transaction.
    pub fn is_transactional(&self) -> bool {
        matches!(self.conn, Conn::Tx(_))
    }
}

impl Deref for SqliteContext {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        match &self.conn {
            Conn::Tx(tx) => tx,
            Conn::Plain(c) => c,
        }
    }
}

impl DerefMut for SqliteContext {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match &mut self.conn {
            Conn::Tx(tx) => tx,
            Conn::Plain(c) => c,
        }
    }
}

impl flamingock_core::ChangeContext for SqliteContext {
    type Target = SqliteTarget;
}

impl TargetSystem for SqliteTarget {
    type Context = SqliteContext;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        match &self.kind {
            Kind::Shared(shared) => shared.capabilities(),
            Kind::Separate { markers: Some(_) } => {
                TargetCapabilities::transactional().with_marker()
            }
            Kind::Separate { markers: None } => TargetCapabilities::transactional(),
        }
    }

    async fn begin(&self, mode: ContextMode) -> Result<SqliteContext, TargetError> {
        match mode {
            ContextMode::Transaction => {
                // The marker table is created before the change's transaction,
                // never inside it.
                self.markers().await?;
                // Take the write lock up front: a deferred transaction that
                // read first could fail to upgrade once another process wrote.
                let tx = self
                    .pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(|e| self.begin_error(e))?;
                Ok(SqliteContext { conn: Conn::Tx(tx) })
            }
            ContextMode::NonTransactional => {
                let c = self
                    .pool
                    .acquire()
                    .await
                    .map_err(|e| self.backend("acquire a connection", e))?;
                Ok(SqliteContext {
                    conn: Conn::Plain(c),
                })
            }
        }
    }

    async fn commit(&self, ctx: SqliteContext, with: CommitWith<'_>) -> Result<(), TargetError> {
        let mut tx =
            match ctx.conn {
                Conn::Tx(tx) => tx,
                Conn::Plain(_) => return match with {
                    CommitWith::Nothing => Ok(()),
                    _ => Err(self.unsupported(
                        "asked to commit an audit entry or marker with a non-transactional context",
                    )),
                },
            };
        match with {
            CommitWith::Audit(entry) => {
                let Kind::Shared(shared) = &self.kind else {
                    let _ = tx.rollback().await;
                    return Err(self.unsupported(
                        "asked to commit an audit entry but this target shares no audit store",
                    ));
                };
                // Same connection, same transaction: fence check, history and
                // current state commit together with the change.
                if let Err(e) = shared.append(&self.id, &mut tx, entry).await {
                    let _ = tx.rollback().await;
                    return Err(e);
                }
            }
            CommitWith::Marker(m) => {
                let Some(markers) = self.markers().await? else {
                    let _ = tx.rollback().await;
                    return Err(self.unsupported("asked to write a marker but markers are off"));
                };
                let token = i64::try_from(m.fencing_token).unwrap_or(i64::MAX);
                if let Err(e) = q(&markers.put)
                    .bind(&m.change_id)
                    .bind(&m.run_id)
                    .bind(token)
                    .bind(fmt_ts(Utc::now()))
                    .execute(&mut *tx)
                    .await
                {
                    let _ = tx.rollback().await;
                    return Err(TargetError::NotCommitted {
                        target: self.id.clone(),
                        source: Box::new(e),
                    });
                }
            }
            _ => {}
        }
        tx.commit().await.map_err(|e| self.commit_error(e))
    }

    async fn abort(&self, ctx: SqliteContext) -> Result<(), TargetError> {
        match ctx.conn {
            Conn::Tx(tx) => tx
                .rollback()
                .await
                .map_err(|e| self.backend("roll back the transaction", e)),
            Conn::Plain(_) => Ok(()),
        }
    }

    async fn marker(&self, change_id: &str) -> Result<Option<Marker>, TargetError> {
        let Some(m) = self.markers().await? else {
            return Ok(None);
        };
        let row = q(&m.get)
            .bind(change_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.backend("read the marker", e))?;
        let Some(row) = row else { return Ok(None) };
        let bad = |detail: String| TargetError::Backend {
            target: self.id.clone(),
            operation: "read the marker",
            source: format!(
                "malformed {} row of change '{change_id}': {detail}",
                m.table.name
            )
            .into(),
        };
        let run_id: String = row.try_get("run_id").map_err(|e| bad(e.to_string()))?;
        let token: i64 = row
            .try_get("fencing_token")
            .map_err(|e| bad(e.to_string()))?;
        Ok(Some(Marker {
            change_id: change_id.to_owned(),
            run_id,
            fencing_token: u64::try_from(token)
                .map_err(|_| bad(format!("negative fencing token {token}")))?,
        }))
    }

    async fn clear_marker(&self, change_id: &str) -> Result<(), TargetError> {
        let Some(m) = self.markers().await? else {
            return Ok(());
        };
        q(&m.delete)
            .bind(change_id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.backend("remove the marker", e))?;
        Ok(())
    }
}
