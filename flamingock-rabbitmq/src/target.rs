//! The RabbitMQ target system.

use std::sync::Arc;

use flamingock_core::{CommitWith, ContextMode, TargetCapabilities, TargetError, TargetSystem};
use lapin::{Connection, ConnectionProperties};
use tokio::sync::Mutex;

use crate::context::RabbitContext;

/// A RabbitMQ broker (one virtual host) changes declare things on.
///
/// Non-transactional: a change's declarations are not undone by the broker
/// when it fails, so the runner records STARTED before and APPLIED after
/// (give changes an [`is_applied`](flamingock_core::Change::is_applied)
/// check, and the next run settles a change that crashed half-way by itself).
/// The connection is opened by the first change that needs it (building the
/// target does no I/O) and opened again if the broker closed it.
#[derive(Clone)]
pub struct RabbitTarget {
    id: String,
    uri: Arc<str>,
    shown: Arc<str>,
    conn: Arc<Mutex<Option<Arc<Connection>>>>,
}

impl std::fmt::Debug for RabbitTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitTarget")
            .field("id", &self.id)
            .field("uri", &self.shown)
            .finish()
    }
}

/// Configures a [`RabbitTarget`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RabbitTargetBuilder {
    id: String,
    uri: String,
}

impl RabbitTarget {
    /// A builder for a target named `id` on the broker at `uri`
    /// (`amqp://user:password@host:5672/vhost`, the vhost percent-encoded:
    /// `%2f` for `/`).
    pub fn builder(id: impl Into<String>, uri: impl Into<String>) -> RabbitTargetBuilder {
        RabbitTargetBuilder {
            id: id.into(),
            uri: uri.into(),
        }
    }

    /// The broker's URI, password hidden.
    pub fn shown_uri(&self) -> &str {
        &self.shown
    }

    /// The connection, opened (again) when needed.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>, TargetError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.status().connected() {
                return Ok(c.clone());
            }
        }
        let conn = Connection::connect(&self.uri, ConnectionProperties::default())
            .await
            .map_err(|e| TargetError::Backend {
                target: self.id.clone(),
                operation: "connect to the broker",
                source: format!("{}: {e}", self.shown).into(),
            })?;
        let conn = Arc::new(conn);
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

impl RabbitTargetBuilder {
    /// Checks the URI's form. Does no I/O.
    ///
    /// # Errors
    /// [`TargetError::Unsupported`] when the URI is not `amqp://...`.
    pub async fn build(self) -> Result<RabbitTarget, TargetError> {
        let shown = redact(&self.uri);
        if !self.uri.starts_with("amqp://") {
            return Err(TargetError::Unsupported {
                target: self.id,
                detail: format!(
                    "{shown} is not an amqp:// URI (amqp://user:password@host:5672/vhost; TLS \
                     endpoints are not supported by this build)"
                ),
            });
        }
        Ok(RabbitTarget {
            id: self.id,
            uri: Arc::from(self.uri),
            shown: Arc::from(shown),
            conn: Arc::default(),
        })
    }
}

/// `amqp://user:secret@host` → `amqp://user:***@host`.
fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => uri.to_owned(),
        },
        None => uri.to_owned(),
    }
}

impl TargetSystem for RabbitTarget {
    type Context = RabbitContext;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        TargetCapabilities::non_transactional()
    }

    async fn begin(&self, _mode: ContextMode) -> Result<RabbitContext, TargetError> {
        let conn = self.connection().await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| TargetError::Backend {
                target: self.id.clone(),
                operation: "open a channel",
                source: Box::new(e),
            })?;
        Ok(RabbitContext::new(conn, channel))
    }

    async fn commit(&self, ctx: RabbitContext, with: CommitWith<'_>) -> Result<(), TargetError> {
        ctx.close().await;
        match with {
            CommitWith::Nothing => Ok(()),
            _ => Err(TargetError::Unsupported {
                target: self.id.clone(),
                detail: "a broker has no transaction to commit an audit entry or a marker in"
                    .into(),
            }),
        }
    }

    async fn abort(&self, ctx: RabbitContext) -> Result<(), TargetError> {
        ctx.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts() {
        assert_eq!(
            super::redact("amqp://u:p@h:5672/%2f"),
            "amqp://u:***@h:5672/%2f"
        );
        assert_eq!(super::redact("amqp://h"), "amqp://h");
    }
}
