//! The S3 target.

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketVersioningStatus, ExpirationStatus, LifecycleExpiration,
    LifecycleRule, LifecycleRuleFilter, VersioningConfiguration,
};
use flamingock_core::{CommitWith, ContextMode, TargetCapabilities, TargetError, TargetSystem};

use crate::error::{service, AwsError};

/// S3 (one client: region, credentials, endpoint) that changes create and
/// configure buckets on. Non-transactional.
#[derive(Debug, Clone)]
pub struct S3Target {
    id: String,
    client: aws_sdk_s3::Client,
}

/// Configures an [`S3Target`].
#[derive(Debug, Clone)]
#[must_use]
pub struct S3TargetBuilder {
    id: String,
    client: aws_sdk_s3::Client,
}

impl S3Target {
    /// A builder for a target named `id` on `client`.
    pub fn builder(id: impl Into<String>, client: aws_sdk_s3::Client) -> S3TargetBuilder {
        S3TargetBuilder {
            id: id.into(),
            client,
        }
    }
}

impl S3TargetBuilder {
    /// Builds the target. Does no I/O.
    ///
    /// # Errors
    /// None today; the `Result` keeps the builders' shape.
    pub async fn build(self) -> Result<S3Target, TargetError> {
        Ok(S3Target {
            id: self.id,
            client: self.client,
        })
    }
}

/// A change's view of S3.
#[derive(Debug)]
pub struct S3Context {
    client: aws_sdk_s3::Client,
}

impl S3Context {
    /// The client, for anything the helpers do not cover.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Whether the bucket exists (and this client may see it); only looks.
    pub async fn bucket_exists(&mut self, bucket: &str) -> Result<bool, AwsError> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error().is_some_and(|s| s.is_not_found())
                    || e.raw_response().map(|r| r.status().as_u16()) == Some(404) =>
            {
                Ok(false)
            }
            Err(e) => Err(service(format!("look for bucket '{bucket}'"), &e)),
        }
    }

    /// Creates the bucket if absent; returns whether it created it.
    pub async fn ensure_bucket(&mut self, bucket: &str) -> Result<bool, AwsError> {
        if self.bucket_exists(bucket).await? {
            return Ok(false);
        }
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
            {
                Ok(false)
            }
            Err(e) => Err(service(format!("create bucket '{bucket}'"), &e)),
        }
    }

    /// Whether versioning is enabled on the bucket.
    pub async fn versioning(&mut self, bucket: &str) -> Result<bool, AwsError> {
        let out = self
            .client
            .get_bucket_versioning()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| service(format!("read versioning of bucket '{bucket}'"), &e))?;
        Ok(out.status() == Some(&BucketVersioningStatus::Enabled))
    }

    /// Enables (or suspends) versioning. S3's `PutBucketVersioning` is
    /// idempotent, so this writes without reading first.
    pub async fn set_versioning(&mut self, bucket: &str, enabled: bool) -> Result<(), AwsError> {
        let status = if enabled {
            BucketVersioningStatus::Enabled
        } else {
            BucketVersioningStatus::Suspended
        };
        self.client
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(VersioningConfiguration::builder().status(status).build())
            .send()
            .await
            .map_err(|e| service(format!("set versioning of bucket '{bucket}'"), &e))?;
        Ok(())
    }

    /// Sets the bucket's lifecycle to one rule `rule_id` expiring objects
    /// under `prefix` after `days` days (it replaces the bucket's lifecycle
    /// configuration, as S3's API does).
    pub async fn set_expiration(
        &mut self,
        bucket: &str,
        rule_id: &str,
        prefix: &str,
        days: i32,
    ) -> Result<(), AwsError> {
        let op = || format!("set the lifecycle of bucket '{bucket}'");
        let rule = LifecycleRule::builder()
            .id(rule_id)
            .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
            .status(ExpirationStatus::Enabled)
            .expiration(LifecycleExpiration::builder().days(days).build())
            .build()
            .map_err(|e| AwsError::Service {
                operation: op(),
                detail: e.to_string(),
            })?;
        let config = BucketLifecycleConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(|e| AwsError::Service {
                operation: op(),
                detail: e.to_string(),
            })?;
        self.client
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(config)
            .send()
            .await
            .map_err(|e| service(op(), &e))?;
        Ok(())
    }

    /// The expiration in days of lifecycle rule `rule_id`, if the bucket has it.
    pub async fn expiration_days(
        &mut self,
        bucket: &str,
        rule_id: &str,
    ) -> Result<Option<i32>, AwsError> {
        match self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .rules()
                .iter()
                .find(|r| r.id() == Some(rule_id))
                .and_then(|r| r.expiration())
                .and_then(|e| e.days())),
            Err(e)
                if e.as_service_error()
                    .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
                    == Some("NoSuchLifecycleConfiguration") =>
            {
                Ok(None)
            }
            Err(e) => Err(service(
                format!("read the lifecycle of bucket '{bucket}'"),
                &e,
            )),
        }
    }

    /// Sets the bucket policy (a JSON document) unless it is already the
    /// same document; returns whether it wrote.
    pub async fn set_policy(
        &mut self,
        bucket: &str,
        policy: &serde_json::Value,
    ) -> Result<bool, AwsError> {
        if self.policy(bucket).await?.as_ref() == Some(policy) {
            return Ok(false);
        }
        self.client
            .put_bucket_policy()
            .bucket(bucket)
            .policy(policy.to_string())
            .send()
            .await
            .map_err(|e| service(format!("set the policy of bucket '{bucket}'"), &e))?;
        Ok(true)
    }

    /// The bucket policy, if it has one.
    pub async fn policy(&mut self, bucket: &str) -> Result<Option<serde_json::Value>, AwsError> {
        match self.client.get_bucket_policy().bucket(bucket).send().await {
            Ok(out) => Ok(out.policy().and_then(|p| serde_json::from_str(p).ok())),
            Err(e)
                if e.as_service_error()
                    .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
                    == Some("NoSuchBucketPolicy") =>
            {
                Ok(None)
            }
            Err(e) => Err(service(format!("read the policy of bucket '{bucket}'"), &e)),
        }
    }
}

impl TargetSystem for S3Target {
    type Context = S3Context;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        TargetCapabilities::non_transactional()
    }

    async fn begin(&self, _mode: ContextMode) -> Result<S3Context, TargetError> {
        Ok(S3Context {
            client: self.client.clone(),
        })
    }

    async fn commit(&self, _ctx: S3Context, with: CommitWith<'_>) -> Result<(), TargetError> {
        match with {
            CommitWith::Nothing => Ok(()),
            _ => Err(TargetError::Unsupported {
                target: self.id.clone(),
                detail: "S3 has no transaction to commit an audit entry or a marker in".into(),
            }),
        }
    }

    async fn abort(&self, _ctx: S3Context) -> Result<(), TargetError> {
        Ok(())
    }
}
