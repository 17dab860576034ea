//! Database errors as people read them, and the error classes the crate acts on.

/// MySQL's message with its error number and SQLSTATE, e.g.
/// `Table 'users' already exists (error 1050, SQLSTATE 42S01)`.
///
/// sqlx's own `Display` prefixes `error returned from database:` and puts
/// the numbers first; other errors (I/O, TLS, pool) keep sqlx's text.
pub fn describe_error(e: &sqlx::Error) -> String {
    let sqlx::Error::Database(db) = e else {
        return e.to_string();
    };
    let mut s = db.message().to_owned();
    let number = error_number(e);
    match (number, db.code()) {
        (Some(n), Some(code)) => s.push_str(&format!(" (error {n}, SQLSTATE {code})")),
        (Some(n), None) => s.push_str(&format!(" (error {n})")),
        (None, Some(code)) => s.push_str(&format!(" (SQLSTATE {code})")),
        (None, None) => {}
    }
    s
}

/// The server's error number (`1050`: table exists, `1146`: no such table...), if `e` is a database error.
pub fn error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|m| m.number()),
        _ => None,
    }
}

/// `ER_NO_SUCH_TABLE` (1146) or `ER_BAD_DB_ERROR` (1049): the table or its database does not exist.
pub(crate) fn is_undefined_table(e: &sqlx::Error) -> bool {
    matches!(error_number(e), Some(1146 | 1049))
}

/// `ER_BAD_FIELD_ERROR` (1054): a column does not exist.
pub(crate) fn is_undefined_column(e: &sqlx::Error) -> bool {
    error_number(e) == Some(1054)
}

/// A deadlock (1213) or lock wait timeout (1205): InnoDB rolled the
/// statement (a deadlock: the whole transaction) back; safe to retry a
/// transaction of this crate's own.
pub(crate) fn is_retryable_conflict(e: &sqlx::Error) -> bool {
    matches!(error_number(e), Some(1213 | 1205))
}

/// Whether `e` says the connection is gone (the statement never ran or its
/// outcome is unknown), as opposed to the server refusing the statement.
pub(crate) fn is_connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        // 2006 server has gone away, 2013 lost connection, 1927 connection
        // killed (MariaDB), 1053 server shutdown, 4031 disconnected for
        // inactivity (MySQL 8.0.24+).
        sqlx::Error::Database(_) => {
            matches!(error_number(e), Some(2006 | 2013 | 1927 | 1053 | 4031))
        }
        _ => false,
    }
}

/// `e` as the source of one of this crate's errors.
pub(crate) fn boxed(e: sqlx::Error) -> flamingock_core::BoxError {
    Box::new(e)
}
