//! Database errors as people read them.

use sqlx::postgres::PgDatabaseError;

/// PostgreSQL's message with its SQLSTATE (and its detail and hint when it
/// sends them), e.g. `relation "users" already exists (SQLSTATE 42P07)`.
///
/// sqlx's own `Display` prefixes `error returned from database:` and
/// appends the line of PostgreSQL's C source that raised the error
/// (`... already exists at line 1454`), which readers of a SQL file take for
/// a line of their file. Other errors (I/O, TLS, pool) keep sqlx's text.
pub fn describe_error(e: &sqlx::Error) -> String {
    let sqlx::Error::Database(db) = e else {
        return e.to_string();
    };
    let mut s = db.message().to_owned();
    if let Some(code) = db.code() {
        s.push_str(&format!(" (SQLSTATE {code})"));
    }
    if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
        if let Some(detail) = pg.detail() {
            s.push_str(&format!("; detail: {detail}"));
        }
        if let Some(hint) = pg.hint() {
            s.push_str(&format!("; hint: {hint}"));
        }
    }
    s
}

/// The SQLSTATE of a database error, if it is one.
pub fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}
