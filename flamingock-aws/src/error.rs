//! What an AWS helper can fail with.

/// An error of [`S3Context`](crate::S3Context)'s or
/// [`SqsContext`](crate::SqsContext)'s helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    /// The object exists with other settings; nothing was changed.
    #[error("{what} exists with other settings: asked for {asked}; it has {current}. Nothing was changed: declare it as it is, or change it in a change of its own")]
    Mismatch {
        /// The object, e.g. `SQS queue 'orders'`.
        what: String,
        /// The settings asked for.
        asked: String,
        /// The settings it has (the same keys).
        current: String,
    },
    /// The service refused or failed an operation.
    #[error("{operation} failed: {detail}")]
    Service {
        /// What was being done.
        operation: String,
        /// The SDK's error, with the service's code and message.
        detail: String,
    },
}

/// The SDK error as people read it: the service's code and message when it
/// sent them, else the SDK's own text.
pub(crate) fn service<E>(operation: String, e: &aws_sdk_s3::error::SdkError<E>) -> AwsError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = match e.as_service_error() {
        Some(s) => match (s.code(), s.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_owned(),
            _ => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
        },
        None => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
    };
    AwsError::Service { operation, detail }
}
