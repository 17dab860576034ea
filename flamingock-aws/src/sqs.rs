//! The SQS target.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::QueueAttributeName;
use flamingock_core::{CommitWith, ContextMode, TargetCapabilities, TargetError, TargetSystem};

use crate::error::AwsError;

/// SQS (one client) that changes create queues on. Non-transactional.
#[derive(Debug, Clone)]
pub struct SqsTarget {
    id: String,
    client: aws_sdk_sqs::Client,
}

/// Configures an [`SqsTarget`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SqsTargetBuilder {
    id: String,
    client: aws_sdk_sqs::Client,
}

impl SqsTarget {
    /// A builder for a target named `id` on `client`.
    pub fn builder(id: impl Into<String>, client: aws_sdk_sqs::Client) -> SqsTargetBuilder {
        SqsTargetBuilder {
            id: id.into(),
            client,
        }
    }
}

impl SqsTargetBuilder {
    /// Builds the target. Does no I/O.
    ///
    /// # Errors
    /// None today; the `Result` keeps the builders' shape.
    pub async fn build(self) -> Result<SqsTarget, TargetError> {
        Ok(SqsTarget {
            id: self.id,
            client: self.client,
        })
    }
}

/// A queue as a change declares it: its name and the attributes it fixes
/// (`VisibilityTimeout`, `MessageRetentionPeriod`, `RedrivePolicy`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsQueueSpec {
    name: String,
    attributes: BTreeMap<String, String>,
}

impl SqsQueueSpec {
    /// A queue named `name` with SQS's defaults.
    pub fn new(name: impl Into<String>) -> Self {
        SqsQueueSpec {
            name: name.into(),
            attributes: BTreeMap::new(),
        }
    }

    /// Any attribute, by its SQS name (`VisibilityTimeout`, ...).
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// `VisibilityTimeout` in seconds.
    pub fn visibility_timeout_secs(self, s: u32) -> Self {
        self.attribute("VisibilityTimeout", s.to_string())
    }

    /// `MessageRetentionPeriod` in seconds.
    pub fn retention_secs(self, s: u32) -> Self {
        self.attribute("MessageRetentionPeriod", s.to_string())
    }

    /// Dead-letter settings: after `max_receives` receives a message moves to
    /// the queue whose ARN is `dead_letter_arn`.
    pub fn dead_letter(self, dead_letter_arn: &str, max_receives: u32) -> Self {
        let policy = serde_json::json!({
            "deadLetterTargetArn": dead_letter_arn,
            "maxReceiveCount": max_receives,
        });
        self.attribute("RedrivePolicy", policy.to_string())
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn describe(map: &BTreeMap<String, String>) -> String {
        if map.is_empty() {
            return "SQS's defaults".into();
        }
        map.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether two attribute values say the same thing (JSON documents such as
/// `RedrivePolicy` compared as JSON: SQS may rewrite their spacing or types).
fn same_value(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => normalise(&x) == normalise(&y),
        _ => false,
    }
}

/// JSON with numbers written as strings turned into numbers.
fn normalise(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), normalise(v))).collect())
        }
        serde_json::Value::String(s) => match s.parse::<i64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => v.clone(),
        },
        other => other.clone(),
    }
}

fn sqs_error<E>(operation: String, e: &aws_sdk_sqs::error::SdkError<E>) -> AwsError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = match e.as_service_error() {
        Some(s) => match (s.code(), s.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_owned(),
            _ => aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
        },
        None => aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
    };
    AwsError::Service { operation, detail }
}

/// A change's view of SQS.
#[derive(Debug)]
pub struct SqsContext {
    client: aws_sdk_sqs::Client,
}

impl SqsContext {
    /// The client, for anything the helpers do not cover.
    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    /// The queue's URL, if it exists; only looks.
    pub async fn queue_url(&mut self, name: &str) -> Result<Option<String>, AwsError> {
        match self.client.get_queue_url().queue_name(name).send().await {
            Ok(out) => Ok(out.queue_url().map(str::to_owned)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_does_not_exist())
                    || e.as_service_error()
                        .and_then(aws_sdk_sqs::error::ProvideErrorMetadata::code)
                        .is_some_and(|c| c.contains("NonExistentQueue")) =>
            {
                Ok(None)
            }
            Err(e) => Err(sqs_error(format!("look for SQS queue '{name}'"), &e)),
        }
    }

    /// Whether the queue exists; only looks.
    pub async fn queue_exists(&mut self, name: &str) -> Result<bool, AwsError> {
        Ok(self.queue_url(name).await?.is_some())
    }

    /// The queue's attributes (all of them), if it exists.
    pub async fn attributes(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AwsError> {
        let Some(url) = self.queue_url(name).await? else {
            return Ok(None);
        };
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| sqs_error(format!("read the attributes of SQS queue '{name}'"), &e))?;
        Ok(Some(
            out.attributes()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        ))
    }

    /// The queue's ARN, if it exists.
    pub async fn queue_arn(&mut self, name: &str) -> Result<Option<String>, AwsError> {
        Ok(self
            .attributes(name)
            .await?
            .and_then(|a| a.get("QueueArn").cloned()))
    }

    /// Creates the queue if absent and returns its URL; nothing happens when
    /// it exists with the attributes asked for; [`AwsError::Mismatch`] naming
    /// the queue and both attribute sets when it exists with others.
    pub async fn ensure_queue(&mut self, spec: &SqsQueueSpec) -> Result<String, AwsError> {
        if let Some(current) = self.attributes(&spec.name).await? {
            let differs: BTreeMap<String, String> = spec
                .attributes
                .iter()
                .filter(|(k, v)| current.get(*k).is_none_or(|c| !same_value(c, v)))
                .map(|(k, _)| (k.clone(), current.get(k).cloned().unwrap_or_default()))
                .collect();
            if !differs.is_empty() {
                return Err(AwsError::Mismatch {
                    what: format!("SQS queue '{}'", spec.name),
                    asked: SqsQueueSpec::describe(&spec.attributes),
                    current: SqsQueueSpec::describe(&differs),
                });
            }
            return self
                .queue_url(&spec.name)
                .await?
                .ok_or_else(|| AwsError::Service {
                    operation: format!("look for SQS queue '{}'", spec.name),
                    detail: "it disappeared while being read".into(),
                });
        }
        let mut req = self.client.create_queue().queue_name(&spec.name);
        for (k, v) in &spec.attributes {
            req = req.attributes(QueueAttributeName::from(k.as_str()), v);
        }
        let out = req
            .send()
            .await
            .map_err(|e| sqs_error(format!("create SQS queue '{}'", spec.name), &e))?;
        Ok(out.queue_url().unwrap_or_default().to_owned())
    }

    /// Deletes the queue; nothing happens when it does not exist.
    pub async fn delete_queue(&mut self, name: &str) -> Result<(), AwsError> {
        let Some(url) = self.queue_url(name).await? else {
            return Ok(());
        };
        self.client
            .delete_queue()
            .queue_url(url)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sqs_error(format!("delete SQS queue '{name}'"), &e))
    }
}

impl TargetSystem for SqsTarget {
    type Context = SqsContext;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        TargetCapabilities::non_transactional()
    }

    async fn begin(&self, _mode: ContextMode) -> Result<SqsContext, TargetError> {
        Ok(SqsContext {
            client: self.client.clone(),
        })
    }

    async fn commit(&self, _ctx: SqsContext, with: CommitWith<'_>) -> Result<(), TargetError> {
        match with {
            CommitWith::Nothing => Ok(()),
            _ => Err(TargetError::Unsupported {
                target: self.id.clone(),
                detail: "SQS has no transaction to commit an audit entry or a marker in".into(),
            }),
        }
    }

    async fn abort(&self, _ctx: SqsContext) -> Result<(), TargetError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::same_value;

    #[test]
    fn json_attributes_compare_as_json() {
        assert!(same_value(
            r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":5}"#,
            r#"{"maxReceiveCount": "5", "deadLetterTargetArn": "arn:x"}"#
        ));
        assert!(!same_value("30", "60"));
    }
}
