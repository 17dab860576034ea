//! What a Redis change receives.

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisError};

/// One write of a change.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    Set(String, String),
    Del(String),
    HSet(String, String, String),
    HDel(String, String),
    IncrBy(String, i64),
}

impl Write {
    pub(crate) fn add_to(&self, pipe: &mut redis::Pipeline) {
        match self {
            Write::Set(k, v) => pipe.set(k, v),
            Write::Del(k) => pipe.del(k),
            Write::HSet(k, f, v) => pipe.hset(k, f, v),
            Write::HDel(k, f) => pipe.hdel(k, f),
            Write::IncrBy(k, n) => pipe.incr(k, *n),
        };
        pipe.ignore();
    }
}

/// A change's view of Redis. In a transactional change the writes
/// ([`set`](Self::set), [`hset`](Self::hset), [`del`](Self::del),
/// [`hdel`](Self::hdel)) are queued and sent at commit in one `MULTI/EXEC`
/// with the marker; outside a transaction, use [`apply_now`](Self::apply_now)
/// after queueing, or the connection ([`conn`](Self::conn)). Reads
/// ([`get`](Self::get), [`hget`](Self::hget)) see what Redis holds now.
pub struct RedisContext {
    pub(crate) prefix: std::sync::Arc<str>,
    pub(crate) conn: ConnectionManager,
    pub(crate) queued: Vec<Write>,
    pub(crate) transactional: bool,
}

impl std::fmt::Debug for RedisContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisContext")
            .field("transactional", &self.transactional)
            .field("queued", &self.queued.len())
            .finish()
    }
}

impl RedisContext {
    /// Whether the writes are queued for one `MULTI/EXEC` at commit.
    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// Sets `key` to `value`.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.queued.push(Write::Set(key.into(), value.into()));
    }

    /// Deletes `key`.
    pub fn del(&mut self, key: impl Into<String>) {
        self.queued.push(Write::Del(key.into()));
    }

    /// Sets `field` of the hash `key` (e.g. a flag in a `flags` hash).
    pub fn hset(
        &mut self,
        key: impl Into<String>,
        field: impl Into<String>,
        value: impl Into<String>,
    ) {
        self.queued
            .push(Write::HSet(key.into(), field.into(), value.into()));
    }

    /// Adds `by` to the integer at `key` (a missing key counts as 0).
    pub fn incr(&mut self, key: impl Into<String>, by: i64) {
        self.queued.push(Write::IncrBy(key.into(), by));
    }

    /// The target's key prefix (its marker keys live under it), for changes
    /// that keep keys of their own under the same prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deletes `field` of the hash `key`.
    pub fn hdel(&mut self, key: impl Into<String>, field: impl Into<String>) {
        self.queued.push(Write::HDel(key.into(), field.into()));
    }

    /// Sends the writes queued so far, now, in one `MULTI/EXEC` (for a
    /// non-transactional change that writes in steps; a transactional change's
    /// writes go at commit). Returns how many were sent.
    pub async fn apply_now(&mut self) -> Result<usize, RedisError> {
        let n = self.queued.len();
        if n == 0 {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for w in &self.queued {
            w.add_to(&mut pipe);
        }
        pipe.query_async::<()>(&mut self.conn).await?;
        self.queued.clear();
        Ok(n)
    }

    /// The value of `key` as Redis holds it now.
    pub async fn get(&mut self, key: &str) -> Result<Option<String>, RedisError> {
        self.conn.get(key).await
    }

    /// The value of `field` of the hash `key` as Redis holds it now.
    pub async fn hget(&mut self, key: &str, field: &str) -> Result<Option<String>, RedisError> {
        self.conn.hget(key, field).await
    }

    /// The connection, for anything else (commands sent on it run at once,
    /// outside the change's `MULTI/EXEC`).
    pub fn conn(&mut self) -> &mut ConnectionManager {
        &mut self.conn
    }
}
