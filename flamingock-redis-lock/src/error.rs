//! Errors of building a [`RedisLock`](crate::RedisLock), and how driver
//! errors are explained.

use flamingock_core::tls::TlsRefusal;

/// Why a [`RedisLock`](crate::RedisLock) could not be built or connected.
///
/// Once built, the lock reports through
/// [`LockError`](flamingock_core::LockError) like every lock provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisLockError {
    /// Connection settings were given for a connection the caller made.
    #[error("redis lock: {detail}")]
    InvalidSetting {
        /// What is wrong.
        detail: String,
    },
    /// The name or key prefix cannot be used in a key name.
    #[error("redis lock: invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// `"name"` or `"key prefix"`.
        what: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The connection URL could not be parsed (the URL itself is not
    /// repeated: it may hold a password).
    #[error("redis lock: invalid Redis URL")]
    InvalidUrl {
        /// Driver error.
        #[source]
        source: redis::RedisError,
    },
    /// The server could not be reached or refused the connection.
    #[error("redis lock: cannot connect to {endpoint}: {}", explain(source))]
    Connect {
        /// `host:port/db` (never the password).
        endpoint: String,
        /// Driver error.
        #[source]
        source: redis::RedisError,
    },
}

/// A driver error with a sentence saying what it most likely means.
#[derive(Debug, thiserror::Error)]
#[error("{}", explain(source))]
pub(crate) struct Explained {
    #[source]
    pub(crate) source: redis::RedisError,
}

impl Explained {
    pub(crate) fn boxed(source: redis::RedisError) -> flamingock_core::BoxError {
        Box::new(Explained { source })
    }
}

/// What a driver error most likely means, for the first words of a message.
pub(crate) fn explain(err: &redis::RedisError) -> &'static str {
    let code = err.code().unwrap_or("");
    let auth = err.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(code, "WRONGPASS" | "NOAUTH")
        || err.to_string().contains("AUTH");
    match TlsRefusal::recognise(&err.to_string()) {
        Some(TlsRefusal::UnknownAuthority) => {
            return "TLS: the server's certificate is not signed by an authority this client \
                    trusts (give the CA that signed it with RedisLockBuilder::ca_certificate)";
        }
        Some(TlsRefusal::NameMismatch) => {
            return "TLS: the server's certificate does not name the host of the URL \
                    (connect by a name the certificate lists)";
        }
        Some(TlsRefusal::NotTls) => {
            return "TLS: the server does not accept TLS on that port \
                    (use redis:// for a server without TLS)";
        }
        _ => {}
    }
    if auth {
        "authentication failed (check the user name and password in the Redis URL; \
         a server without a password refuses a password given alone)"
    } else if code == "NOPERM" {
        "permission denied (the Redis user needs EVALSHA, SCRIPT LOAD and the key commands on the lock's keys)"
    } else if err.is_connection_refusal() {
        "server unreachable (is Redis running at that address?)"
    } else if err.is_timeout() {
        "no answer in time (server overloaded or unreachable)"
    } else if err.is_io_error() || err.is_connection_dropped() {
        "connection failed or dropped"
    } else if err.kind() == redis::ErrorKind::Parse {
        "the answer is not the Redis protocol (is a Redis server listening at that address?)"
    } else if matches!(
        err.kind(),
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
    ) {
        "Redis returned an error"
    } else {
        "Redis client error"
    }
}
