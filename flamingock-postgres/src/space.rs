//! What the store, its lock and its shared-transaction targets have in common:
//! the pool, the schema + prefix, "the tables are ready", and how a
//! statement reaches the server (directly, or through a transaction pooler).

use std::future::Future;
use std::ops::{Deref, DerefMut};

use flamingock_core::retry::Transient;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::OnceCell;

use crate::names::{Names, Table};
use crate::schema::{self, SchemaError};

/// A connection for one operation of this crate (see [`Space::conn`]).
pub(crate) enum Conn {
    /// A pooled connection straight to the server.
    Direct(PoolConnection<Postgres>),
    /// Behind a transaction pooler: the operation runs inside its own
    /// transaction, the only span for which the pooler keeps one server
    /// connection, so a statement's parse and execution reach the same server.
    Tx(Transaction<'static, Postgres>),
}

impl Conn {
    /// Ends the operation: commits its transaction behind a pooler.
    pub(crate) async fn finish(self) -> Result<(), sqlx::Error> {
        match self {
            Conn::Direct(_) => Ok(()),
            Conn::Tx(tx) => tx.commit().await,
        }
    }
}

impl Deref for Conn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Conn::Direct(c) => c,
            Conn::Tx(t) => t,
        }
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Conn::Direct(c) => c,
            Conn::Tx(t) => t,
        }
    }
}

/// Opens a connection for one operation on `pool`: behind a transaction
/// pooler, inside a transaction of its own (see [`Conn::Tx`]).
pub(crate) async fn conn(pool: &PgPool, pooler: bool) -> Result<Conn, sqlx::Error> {
    Ok(if pooler {
        Conn::Tx(pool.begin().await?)
    } else {
        Conn::Direct(pool.acquire().await?)
    })
}

/// One schema + prefix on one database.
#[derive(Debug)]
pub(crate) struct Space {
    pub(crate) pool: PgPool,
    pub(crate) names: Names,
    pub(crate) auto_create: bool,
    /// The pool reaches the server through a transaction pooler (PgBouncer
    /// in `pool_mode = transaction`): no statement may rely on the server
    /// connection outliving a transaction, so statements are unnamed and
    /// every operation runs inside a transaction.
    pub(crate) pooler: bool,
    /// The tables [`Space::ready`] makes sure of.
    pub(crate) tables: Vec<Table>,
    ready: OnceCell<()>,
}

impl Space {
    pub(crate) fn new(
        pool: PgPool,
        names: Names,
        auto_create: bool,
        pooler: bool,
        tables: Vec<Table>,
    ) -> Self {
        Space {
            pool,
            names,
            auto_create,
            pooler,
            tables,
            ready: OnceCell::new(),
        }
    }

    /// A connection for one operation (see [`conn`]).
    pub(crate) async fn conn(&self) -> Result<Conn, sqlx::Error> {
        conn(&self.pool, self.pooler).await
    }

    /// Whether statements may be kept prepared on the server connection
    /// (named and cached by sqlx): not behind a transaction pooler.
    pub(crate) fn persistent(&self) -> bool {
        !self.pooler
    }

    /// Whether `e`, from a read, means "our tables do not exist yet" on a
    /// handle that never prepared them: such a read answers "nothing here"
    /// instead of creating anything. Once the tables were made ready, their
    /// disappearance is an error like any other.
    pub(crate) fn absent(&self, e: &sqlx::Error) -> bool {
        self.ready.get().is_none() && is_undefined_table(e)
    }

    /// Checks (and creates, when allowed) the tables once per handle.
    pub(crate) async fn ready(&self) -> Result<(), SchemaError> {
        self.ready
            .get_or_try_init(|| {
                schema::ensure(
                    &self.pool,
                    self.pooler,
                    &self.names,
                    &self.tables,
                    self.auto_create,
                )
            })
            .await
            .map(|_| ())
    }
}

/// Whether `e` says the connection is gone (the statement never ran or its
/// outcome is unknown), as opposed to the server refusing the statement.
pub(crate) fn is_connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // Class 08: connection exception; 57P01-03: the server is
            // terminating this connection (pg_terminate_backend, shutdown).
            c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// Runs an idempotent statement, once more on a fresh connection if the
/// pooled one turns out to be dead (the server restarted, or an
/// administrator terminated it). Never used for non-idempotent writes.
pub(crate) async fn idempotent<T, F, Fut>(what: &str, f: F) -> Result<T, sqlx::Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    flamingock_core::RetryPolicy::none()
        .run(
            what,
            |e| {
                if is_connection_lost(e) {
                    Transient::ConnectionLost
                } else {
                    Transient::No
                }
            },
            f,
        )
        .await
}

/// `undefined_table` (or `invalid_schema_name`): the table does not exist.
pub(crate) fn is_undefined_table(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("42P01" | "3F000")))
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:p@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }
}
