//! SQL-file changes on MySQL / MariaDB (feature `sql-files`): how
//! `flamingock-sql` runs a file's statements on a [`MysqlTarget`].

use flamingock_core::BoxError;
use flamingock_sql::SqlTarget;

use crate::{MysqlContext, MysqlTarget};

impl SqlTarget for MysqlTarget {
    fn split(script: &str) -> Vec<&str> {
        crate::split_statements(script)
    }

    /// DDL and the other statements MySQL commits implicitly: a file with
    /// one runs non-transactionally (see [`MysqlTarget`]).
    fn implicit_commit(statement: &str) -> Option<&'static str> {
        crate::implicit_commit(statement)
    }

    async fn execute(ctx: &mut MysqlContext, statement: &str) -> Result<(), BoxError> {
        // The text protocol: CREATE PROCEDURE, CREATE TRIGGER, LOCK TABLES...
        // cannot be prepared.
        match sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(ctx.conn())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(crate::describe_error(&e).into()),
        }
    }

    fn in_transaction(ctx: &MysqlContext) -> bool {
        ctx.is_transactional()
    }
}
