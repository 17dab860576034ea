//! What a NATS JetStream change receives.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

/// A stream as a change declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    name: String,
    subjects: Vec<String>,
    max_messages: i64,
    max_age: Duration,
}

impl StreamSpec {
    /// A stream named `name` capturing `subjects` (no limits: `-1` messages, no age).
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        subjects: impl IntoIterator<Item = S>,
    ) -> Self {
        StreamSpec {
            name: name.into(),
            subjects: subjects.into_iter().map(Into::into).collect(),
            max_messages: -1,
            max_age: Duration::ZERO,
        }
    }

    /// The most messages the stream keeps.
    pub fn max_messages(mut self, n: i64) -> Self {
        self.max_messages = n;
        self
    }

    /// How long a message is kept (zero: forever).
    pub fn max_age(mut self, d: Duration) -> Self {
        self.max_age = d;
        self
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: self.subjects.clone(),
            max_messages: self.max_messages,
            max_age: self.max_age,
            ..Default::default()
        }
    }

    fn describe(&self) -> String {
        format!(
            "subjects {:?}, max_messages {}, max_age {:?}",
            self.subjects, self.max_messages, self.max_age
        )
    }

    fn describe_config(c: &stream::Config) -> String {
        format!(
            "subjects {:?}, max_messages {}, max_age {:?}",
            c.subjects, c.max_messages, c.max_age
        )
    }

    fn matches(&self, c: &stream::Config) -> bool {
        let mut ours = self.subjects.clone();
        let mut theirs = c.subjects.clone();
        ours.sort();
        theirs.sort();
        ours == theirs && self.max_messages == c.max_messages && self.max_age == c.max_age
    }
}

/// An error of [`NatsContext`]'s helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The server already has the object with another configuration;
    /// nothing was updated.
    #[error("{what} exists with another configuration: asked for {asked}; the server has {current}. Nothing was changed: declare it as it is, or change it in a change of its own")]
    Mismatch {
        /// The object, e.g. `stream 'ORDERS'`.
        what: String,
        /// The configuration asked for.
        asked: String,
        /// The configuration the server has.
        current: String,
    },
    /// The server refused or failed an operation.
    #[error("{operation} failed: {detail}")]
    Server {
        /// What was being done.
        operation: String,
        /// The client's error.
        detail: String,
    },
}

fn server(operation: String, e: impl std::fmt::Display) -> NatsError {
    NatsError::Server {
        operation,
        detail: e.to_string(),
    }
}

fn not_found(e: &impl std::fmt::Display) -> bool {
    let t = e.to_string().to_ascii_lowercase();
    t.contains("not found")
}

/// A change's view of JetStream: the context for anything async-nats can do
/// ([`jetstream`](Self::jetstream)) and helpers that declare if absent.
pub struct NatsContext {
    client: async_nats::Client,
    js: jetstream::Context,
}

impl std::fmt::Debug for NatsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsContext").finish_non_exhaustive()
    }
}

impl NatsContext {
    pub(crate) fn new(client: async_nats::Client) -> Self {
        NatsContext {
            js: jetstream::new(client.clone()),
            client,
        }
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    async fn current(&self, name: &str) -> Result<Option<stream::Config>, NatsError> {
        match self.js.get_stream(name).await {
            Ok(mut s) => {
                let info = s
                    .info()
                    .await
                    .map_err(|e| server(format!("read stream '{name}'"), e))?;
                Ok(Some(info.config.clone()))
            }
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(server(format!("look for stream '{name}'"), e)),
        }
    }

    /// Creates the stream if absent; nothing happens when it exists as asked;
    /// [`NatsError::Mismatch`] when it exists otherwise.
    pub async fn declare_stream(&mut self, spec: &StreamSpec) -> Result<(), NatsError> {
        let mismatch = |c: &stream::Config| NatsError::Mismatch {
            what: format!("stream '{}'", spec.name),
            asked: spec.describe(),
            current: StreamSpec::describe_config(c),
        };
        if let Some(c) = self.current(&spec.name).await? {
            return if spec.matches(&c) {
                Ok(())
            } else {
                Err(mismatch(&c))
            };
        }
        match self.js.create_stream(spec.config()).await {
            Ok(_) => Ok(()),
            // Made meanwhile by someone else: judge what is there.
            Err(e) => match self.current(&spec.name).await? {
                Some(c) if spec.matches(&c) => Ok(()),
                Some(c) => Err(mismatch(&c)),
                None => Err(server(format!("create stream '{}'", spec.name), e)),
            },
        }
    }

    /// Whether a stream named `name` exists (only looks).
    pub async fn stream_exists(&mut self, name: &str) -> Result<bool, NatsError> {
        Ok(self.current(name).await?.is_some())
    }

    /// Deletes a stream (and its messages); nothing happens when it does not exist.
    pub async fn delete_stream(&mut self, name: &str) -> Result<(), NatsError> {
        match self.js.delete_stream(name).await {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(server(format!("delete stream '{name}'"), e)),
        }
    }

    /// Creates the durable pull consumer `durable` on `stream` if absent,
    /// filtering `filter` when given; nothing happens when it exists with the
    /// same filter; [`NatsError::Mismatch`] when its filter differs.
    pub async fn declare_consumer(
        &mut self,
        stream_name: &str,
        durable: &str,
        filter: Option<&str>,
    ) -> Result<(), NatsError> {
        let s = self
            .js
            .get_stream(stream_name)
            .await
            .map_err(|e| server(format!("look for stream '{stream_name}'"), e))?;
        let wanted = filter.unwrap_or("").to_owned();
        let what = format!("consumer '{durable}' of stream '{stream_name}'");
        match s.consumer_info(durable).await {
            Ok(info) => {
                let current = info.config.filter_subject.clone();
                return if current == wanted {
                    Ok(())
                } else {
                    Err(NatsError::Mismatch {
                        what,
                        asked: format!("filter subject '{wanted}'"),
                        current: format!("filter subject '{current}'"),
                    })
                };
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(server(format!("look for {what}"), e)),
        }
        let config = consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            filter_subject: wanted,
            ..Default::default()
        };
        s.create_consumer(config)
            .await
            .map(|_| ())
            .map_err(|e| server(format!("create {what}"), e))
    }

    /// Whether the consumer `durable` of `stream` exists (only looks; a
    /// missing stream means no).
    pub async fn consumer_exists(
        &mut self,
        stream_name: &str,
        durable: &str,
    ) -> Result<bool, NatsError> {
        let s = match self.js.get_stream(stream_name).await {
            Ok(s) => s,
            Err(e) if not_found(&e) => return Ok(false),
            Err(e) => return Err(server(format!("look for stream '{stream_name}'"), e)),
        };
        match s.consumer_info(durable).await {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(server(format!("look for consumer '{durable}'"), e)),
        }
    }
}
