//! Building a DynamoDB client: the standard AWS chain, an endpoint of your
//! choice, and HTTPS verified against a private certificate authority.

use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A DynamoDB client configured from the standard AWS chain (environment,
/// profile, IMDS...) via `aws_config::defaults(BehaviorVersion::latest())`,
/// with `endpoint_url` overriding the endpoint (DynamoDB Local, moto,
/// LocalStack). Without a region in the chain, `us-east-1` is used.
///
/// For an HTTPS endpoint whose certificate a private authority signed, use
/// [`ConnectOptions`].
pub async fn connect(endpoint_url: Option<&str>) -> aws_sdk_dynamodb::Client {
    let mut options = ConnectOptions::new();
    options.endpoint_url = endpoint_url.map(str::to_owned);
    options.build(None).await
}

/// How to reach DynamoDB: the endpoint, the region and, for HTTPS endpoints
/// whose certificate a private authority signed (a DynamoDB-compatible
/// service behind your own TLS, LocalStack with its own CA), the authority
/// to trust.
///
/// Credentials and everything else come from the standard AWS chain.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use flamingock_dynamodb::{ConnectOptions, DynamoAuditStore};
///
/// let client = ConnectOptions::new()
///     .endpoint_url("https://dynamodb.internal:8443")
///     .ca_certificate(std::fs::read("ca.pem")?)
///     .connect()
///     .await?;
/// let store = DynamoAuditStore::builder(client).build().await?;
/// # drop(store);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    endpoint_url: Option<String>,
    region: Option<String>,
    ca_pem: Option<Vec<u8>>,
}

/// A certificate authority given to [`ConnectOptions::ca_certificate`] that
/// cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The bytes hold no PEM certificate (`-----BEGIN CERTIFICATE-----`).
    #[error("the CA certificate given to ConnectOptions::ca_certificate holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    /// A PEM block could not be read.
    #[error("the CA certificate given to ConnectOptions::ca_certificate is not valid PEM: {0}")]
    InvalidPem(String),
}

impl ConnectOptions {
    /// The standard AWS chain, AWS's own endpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends requests to `url` instead of AWS's endpoint for the region
    /// (`http://` or `https://`).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// The region, instead of the one of the standard chain (`us-east-1`
    /// when the chain has none).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Trusts the certificate authority `pem` (one or more PEM certificates)
    /// for HTTPS endpoints, instead of the system's roots: the endpoint's
    /// certificate must be signed by it and name the endpoint's host.
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// The client.
    ///
    /// # Errors
    /// [`CaError`] when the authority given to
    /// [`ca_certificate`](Self::ca_certificate) holds no readable PEM
    /// certificate (checked here, before any request: the SDK's HTTP client
    /// would panic on it).
    pub async fn connect(self) -> Result<aws_sdk_dynamodb::Client, CaError> {
        let http_client = match &self.ca_pem {
            None => None,
            Some(pem) => Some(https_client_trusting(pem)?),
        };
        Ok(self.build(http_client).await)
    }

    async fn build(
        self,
        http_client: Option<aws_sdk_dynamodb::config::SharedHttpClient>,
    ) -> aws_sdk_dynamodb::Client {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(region) = self.region {
            loader = loader.region(aws_config::Region::new(region));
        }
        if let Some(http_client) = http_client {
            loader = loader.http_client(http_client);
        }
        let config = loader.load().await;
        let mut builder = aws_sdk_dynamodb::config::Builder::from(&config);
        if config.region().is_none() {
            builder = builder.region(aws_sdk_dynamodb::config::Region::new("us-east-1"));
        }
        aws_sdk_dynamodb::Client::from_conf(builder.build())
    }
}

/// An HTTPS client (rustls, the SDK's own crypto provider) that trusts only
/// the certificates of `pem`.
fn https_client_trusting(
    pem: &[u8],
) -> Result<aws_sdk_dynamodb::config::SharedHttpClient, CaError> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| CaError::InvalidPem(e.to_string()))?;
        count += 1;
    }
    if count == 0 {
        return Err(CaError::NoCertificate);
    }
    let trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(pem.to_vec());
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| CaError::InvalidPem(e.to_string()))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_authorities_are_refused_before_any_request() {
        assert!(matches!(
            https_client_trusting(b"not a certificate"),
            Err(CaError::NoCertificate)
        ));
        let broken = b"-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            https_client_trusting(broken),
            Err(CaError::InvalidPem(_))
        ));
    }
}
