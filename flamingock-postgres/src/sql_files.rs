//! SQL-file changes on PostgreSQL (feature `sql-files`): how
//! `flamingock-sql` runs a file's statements on a [`PostgresTarget`].

use flamingock_core::BoxError;
use flamingock_sql::SqlTarget;
use sqlx::Executor;

use crate::{PgContext, PostgresTarget};

/// Appended to a statement PostgreSQL refuses inside a transaction block.
const NO_TRANSACTION_HINT: &str = ": this statement cannot run inside a transaction: \
    add `transactional=false` to the file's header (`-- flamingock: transactional=false` as its \
    first line), ideally with the statement alone in its file";

impl SqlTarget for PostgresTarget {
    fn split(script: &str) -> Vec<&str> {
        crate::split_statements(script)
    }

    async fn execute(ctx: &mut PgContext, statement: &str) -> Result<(), BoxError> {
        let in_tx = ctx.is_transactional();
        match ctx.conn().execute(sqlx::AssertSqlSafe(statement)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let mut text = crate::describe_error(&e);
                // 25001 active_sql_transaction: CREATE INDEX CONCURRENTLY,
                // VACUUM, CREATE DATABASE, ALTER SYSTEM... refuse a transaction.
                if in_tx && crate::sqlstate(&e).as_deref() == Some("25001") {
                    text.push_str(NO_TRANSACTION_HINT);
                }
                Err(text.into())
            }
        }
    }

    fn in_transaction(ctx: &PgContext) -> bool {
        ctx.is_transactional()
    }

    async fn set_statement_timeout(
        ctx: &mut PgContext,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), BoxError> {
        // SET LOCAL ends with the file's transaction; outside one the
        // session setting covers each statement until it is reset.
        let scope = if ctx.is_transactional() { "LOCAL " } else { "" };
        let sql = match timeout {
            Some(d) => format!("SET {scope}statement_timeout = {}", d.as_millis().max(1)),
            None if ctx.is_transactional() => "SET LOCAL statement_timeout TO DEFAULT".to_owned(),
            None => "RESET statement_timeout".to_owned(),
        };
        ctx.conn().execute(sqlx::AssertSqlSafe(sql)).await?;
        Ok(())
    }
}
