//! The Kafka target system.

use std::sync::Arc;
use std::time::Duration;

use flamingock_core::{CommitWith, ContextMode, TargetCapabilities, TargetError, TargetSystem};
use rskafka::client::{Client, ClientBuilder, SaslConfig};
use rskafka::BackoffConfig;
use tokio::sync::OnceCell;

use crate::context::KafkaContext;

/// The default bound on connecting and on each admin request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A Kafka cluster that changes declare topics on. Non-transactional;
/// connects on first use (building does no I/O).
#[derive(Debug, Clone)]
pub struct KafkaTarget {
    id: String,
    bootstrap: Arc<[String]>,
    timeout: Duration,
    sasl: Option<SaslConfig>,
    client: Arc<OnceCell<Arc<Client>>>,
}

/// Configures a [`KafkaTarget`].
#[derive(Debug, Clone)]
#[must_use]
pub struct KafkaTargetBuilder {
    id: String,
    bootstrap: Vec<String>,
    timeout: Duration,
    sasl: Option<SaslConfig>,
}

impl KafkaTarget {
    /// A builder for a target named `id` on the cluster reachable through
    /// `bootstrap` brokers (`host:port`; a `kafka://` prefix is accepted).
    pub fn builder<S: Into<String>>(
        id: impl Into<String>,
        bootstrap: impl IntoIterator<Item = S>,
    ) -> KafkaTargetBuilder {
        KafkaTargetBuilder {
            id: id.into(),
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            timeout: DEFAULT_TIMEOUT,
            sasl: None,
        }
    }

    async fn client(&self) -> Result<Arc<Client>, TargetError> {
        self.client
            .get_or_try_init(|| async {
                let mut b = ClientBuilder::new(self.bootstrap.to_vec())
                    .client_id("flamingock")
                    // rskafka retries without end by default; every call
                    // is also bounded from outside (rskafka 0.6 has no
                    // request timeout of its own).
                    .backoff_config(BackoffConfig {
                        deadline: Some(self.timeout),
                        max_backoff: Duration::from_secs(2),
                        ..BackoffConfig::default()
                    });
                if let Some(sasl) = &self.sasl {
                    b = b.sasl_config(sasl.clone());
                }
                match tokio::time::timeout(self.timeout + Duration::from_secs(1), b.build()).await {
                    Ok(Ok(client)) => Ok(Arc::new(client)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {:?}", self.timeout)),
                }
            })
            .await
            .cloned()
            .map_err(|e| TargetError::Backend {
                target: self.id.clone(),
                operation: "connect to Kafka",
                source: format!("{}: {e}", self.bootstrap.join(",")).into(),
            })
    }
}

impl KafkaTargetBuilder {
    /// Bounds connecting and each admin request (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// SASL authentication (PLAIN, SCRAM, OAUTHBEARER: rskafka's [`SaslConfig`]).
    pub fn sasl(mut self, sasl: SaslConfig) -> Self {
        self.sasl = Some(sasl);
        self
    }

    /// Checks the broker addresses' form. Does no I/O.
    ///
    /// # Errors
    /// [`TargetError::Unsupported`] when no broker is given or one is not `host:port`.
    pub async fn build(self) -> Result<KafkaTarget, TargetError> {
        let invalid = |detail: String| TargetError::Unsupported {
            target: self.id.clone(),
            detail,
        };
        let mut bootstrap = Vec::new();
        for b in self.bootstrap.iter().flat_map(|b| b.split(',')) {
            let b = b.trim();
            let b = b
                .strip_prefix("kafka://")
                .unwrap_or(b)
                .trim_end_matches('/');
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(invalid(format!(
                    "'{b}' is not a broker address (host:port, e.g. 127.0.0.1:9092)"
                )));
            }
            bootstrap.push(b.to_owned());
        }
        if bootstrap.is_empty() {
            return Err(invalid("no bootstrap broker given (host:port)".into()));
        }
        if self.timeout.is_zero() {
            return Err(invalid("the timeout is zero".into()));
        }
        Ok(KafkaTarget {
            id: self.id,
            bootstrap: bootstrap.into(),
            timeout: self.timeout,
            sasl: self.sasl,
            client: Arc::default(),
        })
    }
}

impl TargetSystem for KafkaTarget {
    type Context = KafkaContext;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        TargetCapabilities::non_transactional()
    }

    async fn begin(&self, _mode: ContextMode) -> Result<KafkaContext, TargetError> {
        Ok(KafkaContext::new(self.client().await?, self.timeout))
    }

    async fn commit(&self, _ctx: KafkaContext, with: CommitWith<'_>) -> Result<(), TargetError> {
        match with {
            CommitWith::Nothing => Ok(()),
            _ => Err(TargetError::Unsupported {
                target: self.id.clone(),
                detail:
                    "Kafka's admin API has no transaction to commit an audit entry or a marker in"
                        .into(),
            }),
        }
    }

    async fn abort(&self, _ctx: KafkaContext) -> Result<(), TargetError> {
        Ok(())
    }
}
