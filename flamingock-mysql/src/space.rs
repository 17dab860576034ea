//! What the store, its lock and its shared targets have in common: the
//! pool, the database + prefix, "the tables are ready", and retrying.

use std::future::Future;
use std::time::Duration;

use flamingock_core::retry::Transient;
use sqlx::MySqlPool;
use tokio::sync::OnceCell;

use crate::db_error::{is_connection_lost, is_retryable_conflict, is_undefined_table};
use crate::names::{Names, Table};
use crate::schema::{self, SchemaError};

/// One database + prefix on one server.
#[derive(Debug)]
pub(crate) struct Space {
    pub(crate) pool: MySqlPool,
    pub(crate) names: Names,
    pub(crate) auto_create: bool,
    /// The tables [`Space::ready`] makes sure of.
    pub(crate) tables: Vec<Table>,
    ready: OnceCell<()>,
}

impl Space {
    pub(crate) fn new(
        pool: MySqlPool,
        names: Names,
        auto_create: bool,
        tables: Vec<Table>,
    ) -> Self {
        Space {
            pool,
            names,
            auto_create,
            tables,
            ready: OnceCell::new(),
        }
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
                schema::ensure(&self.pool, &self.names, &self.tables, self.auto_create)
            })
            .await
            .map(|_| ())
    }
}

/// How often a transaction of this crate's own is tried again after InnoDB
/// chose it as a deadlock victim or its lock wait timed out.
const CONFLICT_ATTEMPTS: u32 = 5;

/// Runs an idempotent operation (a read, a fence claim, a lock operation in
/// a transaction of its own), once more on a fresh connection if the pooled
/// one turns out to be dead, and a few times more after a deadlock (InnoDB
/// rolled the whole transaction back). Never used for audit appends, whose
/// outcome a lost connection leaves unknown.
pub(crate) async fn idempotent<T, F, Fut>(what: &str, f: F) -> Result<T, sqlx::Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    flamingock_core::RetryPolicy::default()
        .max_attempts(CONFLICT_ATTEMPTS)
        .base_delay(Duration::from_millis(5))
        .max_delay(Duration::from_millis(100))
        .run(
            what,
            |e| {
                if is_connection_lost(e) {
                    Transient::ConnectionLost
                } else if is_retryable_conflict(e) {
                    Transient::Busy
                } else {
                    Transient::No
                }
            },
            f,
        )
        .await
}

/// `mysql://user:secret@host/db` → `mysql://user:***@host/db`.
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
            redact_url("mysql://u:p@h:3306/db"),
            "mysql://u:***@h:3306/db"
        );
        assert_eq!(redact_url("mysql://u@h/db"), "mysql://u@h/db");
    }
}
