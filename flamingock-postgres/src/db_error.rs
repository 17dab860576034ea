//! Database errors as people read them.

use flamingock_core::tls::TlsRefusal;
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
        return match tls_hint(e) {
            Some(hint) => format!("{e}: {hint}"),
            None => e.to_string(),
        };
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
    if let Some(hint) = pooler_hint(e) {
        s.push_str(&format!(": {hint}"));
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

/// What to do when `e` shows that a pooler in transaction mode sits between
/// this process and the server, but the handle was not told so: a named
/// prepared statement met another client's of the same name (42P05), or a
/// statement prepared on one server connection was looked up on another
/// (26000). PgBouncer also refuses connection options it does not know.
pub(crate) fn pooler_hint(e: &sqlx::Error) -> Option<&'static str> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    let message = db.message();
    match db.code().as_deref() {
        Some("42P05") | Some("26000") if message.contains("prepared statement") => Some(
            "a connection pooler in transaction mode (PgBouncer's pool_mode = transaction) \
             seems to sit in front of the server: declare it, with `?pooler=transaction` in \
             the store URL or `.transaction_pooler(true)` on the store, lock and targets \
             (and statement_cache_capacity(0) on your own pool)",
        ),
        _ if message.contains("unsupported startup parameter: extra_float_digits") => Some(
            "the pooler in front of the server (PgBouncer) refuses the extra_float_digits \
             option that sqlx sends by default: build the connect options with \
             `.extra_float_digits(None)` (this crate's own connections do), or add it to the \
             pooler's ignore_startup_parameters",
        ),
        _ if message.contains("unsupported startup parameter") => Some(
            "the pooler in front of the server (PgBouncer) refuses this connection option: \
             remove it from the URL, or list it in the pooler's ignore_startup_parameters",
        ),
        _ => None,
    }
}

/// What to do about a TLS failure, from the driver's message.
pub(crate) fn tls_hint(e: &sqlx::Error) -> Option<&'static str> {
    // rustls' verdicts arrive as TLS or I/O errors, depending on when the
    // handshake fails.
    let text = match e {
        sqlx::Error::Tls(inner) => inner.to_string(),
        sqlx::Error::Io(inner) => inner.to_string(),
        _ => return None,
    };
    Some(match TlsRefusal::recognise(&text)? {
        TlsRefusal::UnknownAuthority => {
            "the server's certificate is not signed by an authority this client trusts: give \
             the CA that signed it with sslrootcert=PATH"
        }
        TlsRefusal::NameMismatch => {
            "the server's certificate does not name the host of the URL: connect by a name the \
             certificate lists, or use sslmode=verify-ca to check the authority only"
        }
        TlsRefusal::NotTls => {
            "the server (or a pooler in front of it) does not accept TLS connections: turn TLS \
             on there, or choose sslmode=prefer or disable"
        }
        _ => return None,
    })
}

/// A database error whose message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Hinted {
    /// [`describe_error`]'s text, which ends with the hint.
    message: String,
    #[source]
    source: sqlx::Error,
}

/// `e` as the source of one of this crate's errors: with the pooler hint
/// when it applies (see [`pooler_hint`]), else as it is.
pub(crate) fn with_hint(e: sqlx::Error) -> flamingock_core::BoxError {
    match pooler_hint(&e).or_else(|| tls_hint(&e)) {
        Some(_) => Box::new(Hinted {
            message: describe_error(&e),
            source: e,
        }),
        None => Box::new(e),
    }
}
