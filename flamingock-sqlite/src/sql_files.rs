//! SQL-file changes on SQLite (feature `sql-files`): how `flamingock-sql`
//! runs a file's statements on a [`SqliteTarget`].

use flamingock_core::BoxError;
use flamingock_sql::SqlTarget;

use crate::{SqliteContext, SqliteTarget};

impl SqlTarget for SqliteTarget {
    fn split(script: &str) -> Vec<&str> {
        flamingock_sql::split::sqlite(script)
    }

    async fn execute(ctx: &mut SqliteContext, statement: &str) -> Result<(), BoxError> {
        match sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(ctx.conn())
            .await
        {
            Ok(_) => Ok(()),
            // SQLite's own message, without sqlx's "error returned from database:".
            Err(sqlx::Error::Database(db)) => Err(db.message().into()),
            Err(e) => Err(e.into()),
        }
    }

    fn in_transaction(ctx: &SqliteContext) -> bool {
        ctx.is_transactional()
    }
}
