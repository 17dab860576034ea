//! Error types of this crate and the glue that turns SDK errors into the
//! core's error types with their context.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use flamingock_core::tls::TlsRefusal;
use flamingock_core::BoxError;

/// A DynamoDB request that failed: which request, on which table, and the
/// SDK error (with its full context) as the source.
#[derive(Debug, thiserror::Error)]
#[error("{operation} on table {table}: {detail}")]
pub struct RequestError {
    /// The DynamoDB operation, e.g. `TransactWriteItems`.
    pub operation: &'static str,
    /// The table it addressed.
    pub table: String,
    /// The service error code, when the service answered with one.
    pub code: Option<String>,
    /// The SDK error rendered with its context chain.
    pub detail: String,
    /// The SDK error.
    #[source]
    pub source: BoxError,
}

impl RequestError {
    pub(crate) fn new<E, R>(operation: &'static str, table: &str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let mut detail = DisplayErrorContext(&err).to_string();
        if let Some(advice) = TlsRefusal::recognise(&detail).map(tls_advice) {
            detail = format!("{advice} ({detail})");
        }
        RequestError {
            operation,
            table: table.to_owned(),
            code: err.code().map(str::to_owned),
            detail,
            source: Box::new(err),
        }
    }
}

/// What to do about a refused HTTPS endpoint.
fn tls_advice(refusal: TlsRefusal) -> String {
    let remedy = match refusal {
        TlsRefusal::UnknownAuthority => {
            "give the CA that signed it with ConnectOptions::ca_certificate (CLI: tlsCAFile=PATH)"
        }
        TlsRefusal::NameMismatch => "use an endpoint URL whose host the certificate lists",
        TlsRefusal::NotTls => "use an http:// endpoint for a server without TLS (CLI: tls=false)",
        _ => "check the endpoint's TLS setup",
    };
    format!("TLS: {}: {remedy}", refusal.what())
}

/// A problem Flamingock found itself, without a driver error underneath.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Message(pub(crate) String);

/// A message with the underlying error kept as its source.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct WithSource {
    pub(crate) message: String,
    #[source]
    pub(crate) source: BoxError,
}

pub(crate) fn msg(text: impl Into<String>) -> BoxError {
    Box::new(Message(text.into()))
}

/// Errors returned by the write helpers of
/// [`DynamoContext`](crate::DynamoContext).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The change runs outside a transaction
    /// ([`ContextMode::NonTransactional`](flamingock_core::ContextMode)):
    /// nothing pushed to the transaction would ever be sent.
    #[error("target system {target}: this change runs without a transaction (declared `.transactional(false)`), so transaction items would never be sent; call DynamoDB directly with `ctx.client()` instead")]
    NonTransactional {
        /// Target id.
        target: String,
    },
    /// The SDK refused to build the write (e.g. no table name).
    #[error("target system {target}: invalid transaction item")]
    Build {
        /// Target id.
        target: String,
        /// SDK build error.
        #[source]
        source: aws_sdk_dynamodb::error::BuildError,
    },
}
