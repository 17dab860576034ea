//! [`RedisLock`]: the fenced lease lock on two Redis keys.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flamingock_core::{async_trait, Acquire, Lease, LockError, LockInfo, LockProvider};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use tracing::debug;

use crate::error::{Explained, RedisLockError};
use crate::scripts::SCRIPTS;

/// Default first part of the key names.
pub const DEFAULT_KEY_PREFIX: &str = "flamingock";

/// Longest lease sent to Redis (about 34 years): longer ones are capped so
/// `PEXPIRE` never overflows the server's clock arithmetic.
const MAX_LEASE_MS: u64 = 1 << 40;

/// A fenced lease lock on Redis, held in two keys that share a hash tag (so
/// both live in one Redis Cluster slot):
///
/// * `{<prefix>}:lock` (`{<prefix>:<name>}:lock` for a named lock): a hash
///   with `owner` and `token`, whose Redis expiry is the lease;
/// * `{<prefix>}:token`: the token counter, without expiry, so tokens only
///   grow across releases, expiries and force releases.
///
/// Every operation is one Lua script run with `EVALSHA`. Clones share the
/// connection. See the [crate docs](crate) for why the fence, not Redis,
/// is what keeps a run correct.
///
/// Expiry is Redis's own (the server's clock): once a lease has run out
/// the key is gone, so a late `extend` answers `Lost` even when nobody took
/// the lock meanwhile (the in-memory reference lock lets it through); the
/// runner then stops, which is the safe reading. `expires_at` values are
/// this process's clock plus the remaining `PTTL` the server reported.
#[derive(Clone)]
pub struct RedisLock {
    conn: ConnectionManager,
    lock_key: String,
    token_key: String,
    name: String,
}

impl std::fmt::Debug for RedisLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLock")
            .field("name", &self.name)
            .field("lock_key", &self.lock_key)
            .field("token_key", &self.token_key)
            .finish_non_exhaustive()
    }
}

/// Configures a [`RedisLock`]; from [`RedisLock::builder`].
///
/// ```no_run
/// # async fn f() -> Result<(), flamingock_redis_lock::RedisLockError> {
/// use std::time::Duration;
/// use flamingock_redis_lock::RedisLock;
/// let lock = RedisLock::builder("redis://127.0.0.1:6379/")
///     .prefix("myapp")
///     .name("orders")
///     .response_timeout(Duration::from_secs(2))
///     .build()
///     .await?;
/// assert_eq!(lock.lock_key(), "{myapp:orders}:lock");
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisLockBuilder {
    source: RedisSource,
    name: Option<String>,
    prefix: String,
    connection_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
    reconnect_retries: Option<usize>,
    /// PEM of the authority that signed the server's certificate.
    #[cfg(feature = "tls")]
    ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisLockBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLockBuilder")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The Redis server a [`RedisLock`] works on: a URL
/// (`redis://[user:password@]host:port/db`, or `rediss://` for TLS with the
/// `tls` feature, on by default), or a [`ConnectionManager`] you made (its
/// timeouts and retries are yours).
#[derive(Clone)]
pub struct RedisSource(Source);

impl std::fmt::Debug for RedisSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            // The URL may hold a password.
            Source::Url(_) => f.write_str("RedisSource::Url(..)"),
            Source::Manager(_) => f.write_str("RedisSource::Manager(..)"),
        }
    }
}

#[derive(Clone)]
enum Source {
    Url(String),
    Manager(ConnectionManager),
}

impl From<&str> for RedisSource {
    fn from(url: &str) -> Self {
        RedisSource(Source::Url(url.to_owned()))
    }
}

impl From<String> for RedisSource {
    fn from(url: String) -> Self {
        RedisSource(Source::Url(url))
    }
}

impl From<&String> for RedisSource {
    fn from(url: &String) -> Self {
        RedisSource(Source::Url(url.clone()))
    }
}

impl From<ConnectionManager> for RedisSource {
    fn from(conn: ConnectionManager) -> Self {
        RedisSource(Source::Manager(conn))
    }
}

impl RedisLockBuilder {
    /// Trusts the certificate authority in `pem` (PEM text) for `rediss://`
    /// URLs, instead of the system's roots: for a server whose certificate
    /// a private CA signed. The host name of the URL must be one the
    /// server's certificate names.
    #[cfg(feature = "tls")]
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(pem.into());
        self
    }

    /// Sets the first part of the key names (default `flamingock`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Names the lock, for several independent locks under one prefix
    /// (default: none): the keys are `{<prefix>:<name>}:lock` and
    /// `{<prefix>:<name>}:token` instead of `{<prefix>}:lock` and
    /// `{<prefix>}:token`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long one connection attempt may take (default 5 s). For a URL
    /// (with your own connection it is an error at `build`).
    pub fn connection_timeout(mut self, d: Duration) -> Self {
        self.connection_timeout = Some(d);
        self
    }

    /// How long one command may wait for its answer (default 5 s), so a
    /// hung server turns into an error the runner reports instead of a run
    /// that waits forever. For a URL, like
    /// [`connection_timeout`](Self::connection_timeout).
    pub fn response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = Some(d);
        self
    }

    /// How many times the connection manager retries reconnecting after the
    /// connection dropped (default 3). For a URL, like
    /// [`connection_timeout`](Self::connection_timeout).
    pub fn reconnect_retries(mut self, n: usize) -> Self {
        self.reconnect_retries = Some(n);
        self
    }

    /// Connects to the URL and checks the connection (and credentials) with
    /// one round trip; over your own connection manager, does no I/O.
    pub async fn build(self) -> Result<RedisLock, RedisLockError> {
        let (lock_key, token_key) = self.keys()?;
        let url = match &self.source.0 {
            Source::Manager(conn) => {
                #[cfg(feature = "tls")]
                let ca = self.ca.is_some();
                #[cfg(not(feature = "tls"))]
                let ca = false;
                if self.connection_timeout.is_some()
                    || self.response_timeout.is_some()
                    || self.reconnect_retries.is_some()
                    || ca
                {
                    return Err(RedisLockError::InvalidSetting {
                        detail: "connection_timeout, response_timeout, reconnect_retries and \
                                 ca_certificate apply to a URL; set them on your connection \
                                 manager"
                            .to_owned(),
                    });
                }
                return Ok(RedisLock::with(conn.clone(), lock_key, token_key, None));
            }
            Source::Url(url) => url.clone(),
        };
        let client = self.client(&url)?;
        let info = client.get_connection_info();
        let endpoint = format!("{}/{}", info.addr(), info.redis_settings().db());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connection_timeout.unwrap_or(DEFAULT_TIMEOUT)))
            .set_response_timeout(Some(self.response_timeout.unwrap_or(DEFAULT_TIMEOUT)))
            .set_number_of_retries(self.reconnect_retries.unwrap_or(3));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|source| RedisLockError::Connect {
                endpoint: endpoint.clone(),
                source,
            })?;
        Ok(RedisLock::with(conn, lock_key, token_key, Some(&endpoint)))
    }

    fn client(&self, url: &str) -> Result<redis::Client, RedisLockError> {
        let invalid = |source| RedisLockError::InvalidUrl { source };
        #[cfg(feature = "tls")]
        if url.starts_with("rediss://") {
            // rustls needs a crypto provider; use ring's unless the process
            // chose one (several enabled in one build leave none by default).
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                // ring on purpose (what sqlx uses); newer rustls marks it deprecated for
                // lacking post-quantum key exchange.
                #[allow(deprecated)]
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            if let Some(ca) = &self.ca {
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                };
                return redis::Client::build_with_tls(url, certs).map_err(invalid);
            }
        }
        redis::Client::open(url).map_err(invalid)
    }

    fn keys(&self) -> Result<(String, String), RedisLockError> {
        check_name("key prefix", &self.prefix)?;
        let tag = match &self.name {
            Some(name) => {
                check_name("name", name)?;
                format!("{{{}:{name}}}", self.prefix)
            }
            None => format!("{{{}}}", self.prefix),
        };
        Ok((format!("{tag}:lock"), format!("{tag}:token")))
    }
}

/// Default connection and response timeouts.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A name goes inside a hash tag: braces would move the tag, and blanks or
/// control characters make keys that are hard to find and type.
fn check_name(what: &'static str, value: &str) -> Result<(), RedisLockError> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > 200 {
        Some("it is longer than 200 bytes")
    } else if value.contains(['{', '}']) {
        Some("braces would break the Redis Cluster hash tag that keeps the lock's keys in one slot")
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains blanks or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RedisLockError::InvalidName {
            what,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

impl RedisLock {
    /// A builder for the lock on `source`: a URL or a connection manager
    /// (see [`RedisSource`]).
    pub fn builder(source: impl Into<RedisSource>) -> RedisLockBuilder {
        RedisLockBuilder {
            source: source.into(),
            name: None,
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
            connection_timeout: None,
            response_timeout: None,
            reconnect_retries: None,
            #[cfg(feature = "tls")]
            ca: None,
        }
    }

    /// Connects to `url` with the default settings (keys `{flamingock}:lock`
    /// and `{flamingock}:token`), checking the connection with one round trip.
    pub async fn connect(url: &str) -> Result<RedisLock, RedisLockError> {
        Self::builder(url).build().await
    }

    fn with(
        conn: ConnectionManager,
        lock_key: String,
        token_key: String,
        endpoint: Option<&str>,
    ) -> RedisLock {
        let name = match endpoint {
            Some(at) => format!("redis {at} {lock_key}"),
            None => format!("redis {lock_key}"),
        };
        RedisLock {
            conn,
            lock_key,
            token_key,
            name,
        }
    }

    /// The key of the lock record (a hash with `owner` and `token`).
    pub fn lock_key(&self) -> &str {
        &self.lock_key
    }

    /// The key of the token counter.
    pub fn token_key(&self) -> &str {
        &self.token_key
    }

    async fn run(
        &self,
        operation: &'static str,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<Vec<Value>, LockError> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in args {
            inv.arg(*a);
        }
        let mut conn = self.conn.clone();
        let value: Value =
            inv.invoke_async(&mut conn)
                .await
                .map_err(|source| LockError::Backend {
                    lock: self.name.clone(),
                    operation,
                    source: Explained::boxed(source),
                })?;
        match value {
            Value::Array(items) => {
                if let Some(Value::BulkString(status)) = items.first() {
                    if status == b"malformed" {
                        return Err(self.malformed(&items));
                    }
                }
                Ok(items)
            }
            other => Err(self.unexpected(operation, &other)),
        }
    }

    fn malformed(&self, items: &[Value]) -> LockError {
        let key = items.get(1).and_then(text).unwrap_or_default();
        let detail = items.get(2).and_then(text).unwrap_or_default();
        LockError::Malformed {
            lock: self.name.clone(),
            detail: format!(
                "key {key} {detail}; it is not Flamingock's, or was damaged: \
                 inspect it with redis-cli and delete it (DEL {key}) once no runner uses it"
            ),
        }
    }

    fn unexpected(&self, operation: &str, value: &Value) -> LockError {
        LockError::Malformed {
            lock: self.name.clone(),
            detail: format!(
                "unexpected answer to {operation} on {}: {value:?}",
                self.lock_key
            ),
        }
    }

    fn status<'v>(&self, operation: &str, items: &'v [Value]) -> Result<&'v [u8], LockError> {
        match items.first() {
            Some(Value::BulkString(s)) => Ok(s),
            _ => Err(self.unexpected(operation, &Value::Array(items.to_vec()))),
        }
    }

    /// Reads `owner, token, pttl` at `items[1..4]` as a holder. A record
    /// without expiry is malformed (it would block every runner forever)
    /// unless `no_expiry_ok`, where it reads as expiring at the end of time.
    fn holder(&self, items: &[Value], no_expiry_ok: bool) -> Result<LockInfo, LockError> {
        let bad = |detail: String| LockError::Malformed {
            lock: self.name.clone(),
            detail: format!(
                "key {} {detail}; if no runner is working, remove it with force_release",
                self.lock_key
            ),
        };
        let owner = items
            .get(1)
            .and_then(text)
            .ok_or_else(|| bad("has no owner field".into()))?;
        let token = match items.get(2).and_then(text) {
            None => return Err(bad("has no token field".into())),
            Some(t) => t
                .parse::<u64>()
                .ok()
                .filter(|t| *t > 0)
                .ok_or_else(|| bad(format!("has token {t:?}, not a positive integer")))?,
        };
        let expires_at = match items.get(3) {
            Some(Value::Int(ms)) if *ms >= 0 => in_ms(ms.unsigned_abs()),
            Some(Value::Int(-1)) if no_expiry_ok => DateTime::<Utc>::MAX_UTC,
            Some(Value::Int(-1)) => {
                return Err(bad(
                    "has no expiry (PTTL -1), so it would never be released".into(),
                ))
            }
            other => return Err(bad(format!("has an unreadable PTTL {other:?}"))),
        };
        Ok(LockInfo::new(owner, token, expires_at, false))
    }

    fn lost(&self, owner: &str, token: u64, items: &[Value]) -> LockError {
        let holder = match (items.get(1).and_then(text), items.get(2).and_then(text)) {
            (Some(o), Some(t)) => format!("held by {o} with token {t}"),
            _ => "free".to_owned(),
        };
        debug!(lock = %self.name, owner, token, now = %holder, "lease no longer held");
        LockError::Lost {
            lock: self.name.clone(),
            owner: owner.to_owned(),
            token,
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn lease_ms(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LEASE_MS)
}

fn in_ms(ms: u64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 1_000_000))
}

#[async_trait]
impl LockProvider for RedisLock {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn try_acquire(&self, owner: &str, lease: Duration) -> Result<Acquire, LockError> {
        let ms = lease_ms(lease);
        let items = self
            .run(
                "acquire",
                &SCRIPTS.acquire,
                &[&self.lock_key, &self.token_key],
                &[owner, &ms.to_string()],
            )
            .await?;
        match self.status("acquire", &items)? {
            b"acquired" => {
                let token = match items.get(1) {
                    Some(Value::Int(t)) if *t > 0 => *t as u64,
                    other => {
                        return Err(LockError::Malformed {
                            lock: self.name.clone(),
                            detail: format!(
                                "counter {} gave token {other:?}, not a positive integer",
                                self.token_key
                            ),
                        })
                    }
                };
                debug!(lock = %self.name, owner, token, "lock acquired");
                Ok(Acquire::Acquired(Lease::new(token, in_ms(ms))))
            }
            b"held" => Ok(Acquire::Held(self.holder(&items, false)?)),
            _ => Err(self.unexpected("acquire", &Value::Array(items))),
        }
    }

    async fn extend(&self, owner: &str, token: u64, lease: Duration) -> Result<Lease, LockError> {
        let ms = lease_ms(lease);
        let items = self
            .run(
                "extend",
                &SCRIPTS.extend,
                &[&self.lock_key],
                &[owner, &token.to_string(), &ms.to_string()],
            )
            .await?;
        match self.status("extend", &items)? {
            b"ok" => Ok(Lease::new(token, in_ms(ms))),
            b"lost" => Err(self.lost(owner, token, &items)),
            _ => Err(self.unexpected("extend", &Value::Array(items))),
        }
    }

    async fn release(&self, owner: &str, token: u64) -> Result<(), LockError> {
        let items = self
            .run(
                "release",
                &SCRIPTS.release,
                &[&self.lock_key],
                &[owner, &token.to_string()],
            )
            .await?;
        match self.status("release", &items)? {
            b"ok" => {
                debug!(lock = %self.name, owner, token, "lock released");
                Ok(())
            }
            b"lost" => Err(self.lost(owner, token, &items)),
            _ => Err(self.unexpected("release", &Value::Array(items))),
        }
    }

    async fn inspect(&self) -> Result<Option<LockInfo>, LockError> {
        let items = self
            .run("inspect", &SCRIPTS.inspect, &[&self.lock_key], &[])
            .await?;
        match self.status("inspect", &items)? {
            b"none" => Ok(None),
            b"held" => self.holder(&items, false).map(Some),
            _ => Err(self.unexpected("inspect", &Value::Array(items))),
        }
    }

    async fn force_release(&self) -> Result<Option<LockInfo>, LockError> {
        let items = self
            .run(
                "force release",
                &SCRIPTS.force_release,
                &[&self.lock_key],
                &[],
            )
            .await?;
        match self.status("force release", &items)? {
            b"none" => Ok(None),
            b"removed" => match self.holder(&items, true) {
                Ok(info) => {
                    debug!(lock = %self.name, owner = %info.owner, token = info.token, "lock force-released");
                    Ok(Some(info))
                }
                // Removing a damaged record is what an operator asks for here.
                Err(e) => {
                    tracing::warn!(lock = %self.name, error = %e, "force release removed a damaged lock record");
                    Ok(None)
                }
            },
            _ => Err(self.unexpected("force release", &Value::Array(items))),
        }
    }
}
