//! What a Kafka change receives.

use std::sync::Arc;
use std::time::Duration;

use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::Client;

use crate::topic::{valid_name, TopicInfo, TopicSpec};

/// An error of [`KafkaContext`]'s helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// The topic exists with another partition count; nothing was changed.
    #[error("topic '{topic}' exists with another configuration: asked for {asked} partitions; the cluster has {current}. Nothing was changed: declare it as it is, or change it in a change of its own")]
    Mismatch {
        /// The topic.
        topic: String,
        /// The partition count asked for.
        asked: i32,
        /// The partition count the cluster has.
        current: usize,
    },
    /// The declaration is invalid (checked before anything is sent).
    #[error("{0}")]
    Invalid(String),
    /// The cluster refused or failed an operation, or did not answer in time.
    #[error("{operation} failed: {detail}")]
    Cluster {
        /// What was being done.
        operation: String,
        /// The client's error.
        detail: String,
    },
}

fn cluster(operation: String, e: impl std::fmt::Display) -> KafkaError {
    KafkaError::Cluster {
        operation,
        detail: e.to_string(),
    }
}

fn protocol_error(e: &ClientError) -> Option<ProtocolError> {
    match e {
        ClientError::ServerError { protocol_error, .. } => Some(*protocol_error),
        _ => None,
    }
}

/// A change's view of a Kafka cluster: the [client](Self::client) for
/// anything rskafka can do, and topic helpers that declare if absent.
pub struct KafkaContext {
    client: Arc<Client>,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaContext")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KafkaContext {
    pub(crate) fn new(client: Arc<Client>, timeout: Duration) -> Self {
        KafkaContext { client, timeout }
    }

    /// The client (rskafka).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX)
    }

    /// Runs one cluster request within the target's timeout.
    async fn bounded<T>(
        &self,
        operation: impl Fn() -> String,
        f: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<Result<T, ClientError>, KafkaError> {
        tokio::time::timeout(self.timeout, f).await.map_err(|_| {
            cluster(
                operation(),
                format!("no answer within {:?} (the target's timeout)", self.timeout),
            )
        })
    }

    /// The topic named `name` as the cluster has it, if it exists (only looks).
    pub async fn topic(&self, name: &str) -> Result<Option<TopicInfo>, KafkaError> {
        let what = || format!("look for topic '{name}'");
        let topics = self
            .bounded(what, self.client.list_topics())
            .await?
            .map_err(|e| cluster(what(), e))?;
        Ok(topics
            .into_iter()
            .find(|t| t.name == name)
            .map(|t| TopicInfo {
                name: t.name,
                partitions: t.partitions.len(),
            }))
    }

    /// Whether a topic named `name` exists (only looks).
    pub async fn topic_exists(&self, name: &str) -> Result<bool, KafkaError> {
        Ok(self.topic(name).await?.is_some())
    }

    /// Creates the topic if absent; nothing happens when it exists with the
    /// partition count asked for; [`KafkaError::Mismatch`] when it exists
    /// with another (never altered behind your back). The replication
    /// factor is used at creation; the metadata this client reads does not
    /// include it, so an existing topic is judged on its partitions.
    pub async fn declare_topic(&self, spec: &TopicSpec) -> Result<(), KafkaError> {
        if let Some(p) = spec.problem() {
            return Err(KafkaError::Invalid(p));
        }
        let judge = |t: TopicInfo| {
            if i32::try_from(t.partitions).ok() == Some(spec.partitions()) {
                Ok(())
            } else {
                Err(KafkaError::Mismatch {
                    topic: spec.name().to_owned(),
                    asked: spec.partitions(),
                    current: t.partitions,
                })
            }
        };
        if let Some(t) = self.topic(spec.name()).await? {
            return judge(t);
        }
        let what = || format!("create topic '{}'", spec.name());
        let controller = self
            .client
            .controller_client()
            .map_err(|e| cluster(what(), e))?;
        let created = self
            .bounded(
                what,
                controller.create_topic(
                    spec.name(),
                    spec.partitions(),
                    spec.replication(),
                    self.timeout_ms(),
                ),
            )
            .await?;
        match created {
            Ok(()) => Ok(()),
            // Made meanwhile by someone else: judge what is there.
            Err(e) if protocol_error(&e) == Some(ProtocolError::TopicAlreadyExists) => {
                match self.topic(spec.name()).await? {
                    Some(t) => judge(t),
                    None => Err(cluster(what(), e)),
                }
            }
            Err(e) => Err(cluster(what(), e)),
        }
    }

    /// Deletes a topic and its records; nothing happens when it does not exist.
    pub async fn delete_topic(&self, name: &str) -> Result<(), KafkaError> {
        if !valid_name(name) {
            return Err(KafkaError::Invalid(format!(
                "'{name}' is not a valid topic name"
            )));
        }
        let what = || format!("delete topic '{name}'");
        let controller = self
            .client
            .controller_client()
            .map_err(|e| cluster(what(), e))?;
        match self
            .bounded(what, controller.delete_topic(name, self.timeout_ms()))
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) if protocol_error(&e) == Some(ProtocolError::UnknownTopicOrPartition) => Ok(()),
            Err(e) => Err(cluster(what(), e)),
        }
    }
}
