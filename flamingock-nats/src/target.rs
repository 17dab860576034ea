//! The NATS JetStream target system.

use std::sync::Arc;

use flamingock_core::{CommitWith, ContextMode, TargetCapabilities, TargetError, TargetSystem};
use tokio::sync::OnceCell;

use crate::context::NatsContext;

/// A NATS server with JetStream that changes declare streams and consumers
/// on. Non-transactional; connects on first use (building does no I/O).
#[derive(Debug, Clone)]
pub struct NatsTarget {
    id: String,
    url: Arc<str>,
    client: Arc<OnceCell<async_nats::Client>>,
}

/// Configures a [`NatsTarget`].
#[derive(Debug, Clone)]
#[must_use]
pub struct NatsTargetBuilder {
    id: String,
    url: String,
}

impl NatsTarget {
    /// A builder for a target named `id` on the server at `url` (`nats://host:4222`).
    pub fn builder(id: impl Into<String>, url: impl Into<String>) -> NatsTargetBuilder {
        NatsTargetBuilder {
            id: id.into(),
            url: url.into(),
        }
    }

    async fn client(&self) -> Result<async_nats::Client, TargetError> {
        self.client
            .get_or_try_init(|| async {
                let options = async_nats::ConnectOptions::new()
                    .connection_timeout(std::time::Duration::from_secs(5))
                    .max_reconnects(Some(3));
                options.connect(&*self.url).await
            })
            .await
            .cloned()
            .map_err(|e| TargetError::Backend {
                target: self.id.clone(),
                operation: "connect to NATS",
                source: format!("{}: {e}", self.url).into(),
            })
    }
}

impl NatsTargetBuilder {
    /// Checks the URL's form. Does no I/O.
    ///
    /// # Errors
    /// [`TargetError::Unsupported`] when the URL is not `nats://...`.
    pub async fn build(self) -> Result<NatsTarget, TargetError> {
        if !self.url.starts_with("nats://") {
            return Err(TargetError::Unsupported {
                target: self.id,
                detail: format!("'{}' is not a nats:// URL (nats://host:4222)", self.url),
            });
        }
        Ok(NatsTarget {
            id: self.id,
            url: Arc::from(self.url),
            client: Arc::default(),
        })
    }
}

impl TargetSystem for NatsTarget {
    type Context = NatsContext;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        TargetCapabilities::non_transactional()
    }

    async fn begin(&self, _mode: ContextMode) -> Result<NatsContext, TargetError> {
        Ok(NatsContext::new(self.client().await?))
    }

    async fn commit(&self, _ctx: NatsContext, with: CommitWith<'_>) -> Result<(), TargetError> {
        match with {
            CommitWith::Nothing => Ok(()),
            _ => Err(TargetError::Unsupported {
                target: self.id.clone(),
                detail: "JetStream has no transaction to commit an audit entry or a marker in"
                    .into(),
            }),
        }
    }

    async fn abort(&self, _ctx: NatsContext) -> Result<(), TargetError> {
        Ok(())
    }
}
