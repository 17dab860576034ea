//! The Redis target system.

use std::sync::Arc;

use flamingock_core::{
    CommitWith, ContextMode, Marker, MarkerSettings, TargetCapabilities, TargetError, TargetSystem,
};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio::sync::OnceCell;

use crate::context::RedisContext;

/// Default prefix of the marker keys (`flamingock:marker:<change id>`).
pub const DEFAULT_PREFIX: &str = "flamingock";

/// A Redis database changes write configuration and flags to; see the crate
/// docs. Connects on first use (building does no I/O).
#[derive(Clone)]
pub struct RedisTarget {
    id: String,
    client: redis::Client,
    shown: Arc<str>,
    conn: Arc<OnceCell<ConnectionManager>>,
    prefix: Arc<str>,
    marker: bool,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("id", &self.id)
            .field("url", &self.shown)
            .field("prefix", &self.prefix)
            .field("marker", &self.marker)
            .finish()
    }
}

/// Configures a [`RedisTarget`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisTargetBuilder {
    id: String,
    url: String,
    markers: MarkerSettings,
}

impl RedisTarget {
    /// A builder for a target named `id` on the Redis at `url`
    /// (`redis://[user:password@]host:6379/db`).
    pub fn builder(id: impl Into<String>, url: impl Into<String>) -> RedisTargetBuilder {
        RedisTargetBuilder {
            id: id.into(),
            url: url.into(),
            markers: MarkerSettings::default(),
        }
    }

    fn backend(&self, operation: &'static str, e: redis::RedisError) -> TargetError {
        TargetError::Backend {
            target: self.id.clone(),
            operation,
            source: format!("{}: {e}", self.shown).into(),
        }
    }

    async fn conn(&self) -> Result<ConnectionManager, TargetError> {
        self.conn
            .get_or_try_init(|| {
                // Bounded: a wrong or unreachable server is an error within
                // seconds, not a wait the runner cannot see.
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
                    .set_response_timeout(Some(std::time::Duration::from_secs(30)))
                    .set_number_of_retries(2);
                ConnectionManager::new_with_config(self.client.clone(), config)
            })
            .await
            .cloned()
            .map_err(|e| self.backend("connect", e))
    }

    /// The prefix of the marker keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A connection (the target's own, shared by its clones).
    pub async fn connection(&self) -> Result<ConnectionManager, TargetError> {
        self.conn().await
    }

    fn marker_key(&self, change_id: &str) -> String {
        format!("{}:marker:{change_id}", self.prefix)
    }
}

impl RedisTargetBuilder {
    /// The prefix of the marker keys (default `flamingock`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.markers.set_prefix(prefix);
        self
    }

    /// Whether commits write a marker key (default `true`): without it a
    /// crash between the commit and the APPLIED entry needs an operator.
    pub fn marker(mut self, yes: bool) -> Self {
        self.markers.set_marker(yes);
        self
    }

    /// Checks the URL and the prefix. Does no I/O.
    ///
    /// # Errors
    /// [`TargetError::Unsupported`] naming what is wrong.
    pub async fn build(self) -> Result<RedisTarget, TargetError> {
        let shown = redact(&self.url);
        let client =
            redis::Client::open(self.url.as_str()).map_err(|e| TargetError::Unsupported {
                target: self.id.clone(),
                detail: format!("invalid Redis URL {shown}: {e}"),
            })?;
        let (prefix, marker) = self.markers.separate(DEFAULT_PREFIX);
        flamingock_core::names::plain_identifier("marker prefix", &prefix, &['-', '.', ':'], 200)
            .map_err(|e| TargetError::Unsupported {
            target: self.id.clone(),
            detail: e.to_string(),
        })?;
        Ok(RedisTarget {
            id: self.id,
            client,
            shown: Arc::from(shown),
            conn: Arc::default(),
            prefix: Arc::from(prefix),
            marker,
        })
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

impl TargetSystem for RedisTarget {
    type Context = RedisContext;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        let caps = TargetCapabilities::transactional();
        if self.marker {
            caps.with_marker()
        } else {
            caps
        }
    }

    async fn begin(&self, mode: ContextMode) -> Result<RedisContext, TargetError> {
        Ok(RedisContext {
            prefix: self.prefix.clone(),
            conn: self.conn().await?,
            queued: Vec::new(),
            transactional: mode == ContextMode::Transaction,
        })
    }

    async fn commit(&self, mut ctx: RedisContext, with: CommitWith<'_>) -> Result<(), TargetError> {
        let marker = match with {
            CommitWith::Nothing => None,
            CommitWith::Marker(m) if self.marker => Some(m),
            _ => {
                return Err(TargetError::NotCommitted {
                    target: self.id.clone(),
                    source: "this target writes no audit entries and keeps no marker here".into(),
                })
            }
        };
        if !ctx.transactional {
            // A non-transactional change sends what it queued and never left.
            return ctx
                .apply_now()
                .await
                .map(|_| ())
                .map_err(|e| self.backend("write", e));
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for w in &ctx.queued {
            w.add_to(&mut pipe);
        }
        if let Some(m) = marker {
            pipe.set(
                self.marker_key(&m.change_id),
                format!("{}|{}", m.fencing_token, m.run_id),
            )
            .ignore();
        }
        match pipe.query_async::<()>(&mut ctx.conn).await {
            Ok(()) => Ok(()),
            // Redis refused the transaction before running any of it
            // (EXECABORT: a queued command was malformed).
            Err(e) if e.code() == Some("EXECABORT") => Err(TargetError::NotCommitted {
                target: self.id.clone(),
                source: Box::new(e),
            }),
            // No answer: EXEC may or may not have run.
            Err(e) => Err(self.backend("commit (MULTI/EXEC)", e)),
        }
    }

    async fn abort(&self, _ctx: RedisContext) -> Result<(), TargetError> {
        // Nothing was sent: the queued writes are dropped.
        Ok(())
    }

    async fn marker(&self, change_id: &str) -> Result<Option<Marker>, TargetError> {
        if !self.marker {
            return Ok(None);
        }
        let mut conn = self.conn().await?;
        let value: Option<String> = conn
            .get(self.marker_key(change_id))
            .await
            .map_err(|e| self.backend("read marker", e))?;
        let Some(value) = value else { return Ok(None) };
        let Some((token, run_id)) = value.split_once('|') else {
            return Err(TargetError::Backend {
                target: self.id.clone(),
                operation: "read marker",
                source: format!(
                    "marker {} holds '{value}', not '<token>|<run id>'",
                    self.marker_key(change_id)
                )
                .into(),
            });
        };
        let fencing_token = token.parse().map_err(|_| TargetError::Backend {
            target: self.id.clone(),
            operation: "read marker",
            source: format!("marker {}: bad token '{token}'", self.marker_key(change_id)).into(),
        })?;
        Ok(Some(Marker {
            change_id: change_id.to_owned(),
            run_id: run_id.to_owned(),
            fencing_token,
        }))
    }

    async fn clear_marker(&self, change_id: &str) -> Result<(), TargetError> {
        if !self.marker {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        conn.del::<_, ()>(self.marker_key(change_id))
            .await
            .map_err(|e| self.backend("clear marker", e))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts() {
        assert_eq!(
            super::redact("redis://u:p@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(super::redact("redis://h:6379/"), "redis://h:6379/");
    }
}
