//! DynamoDB over HTTPS with a private certificate authority: a private moto
//! server with TLS on a free port, its certificate signed by a test CA for
//! `localhost` only, reached through [`ConnectOptions::ca_certificate`]. The
//! audit, lock and pipeline suites pass over it; a wrong CA, a host name the
//! certificate does not list and a server without TLS are refused with
//! errors that say what to do.
// The nested futures of the suites' pipelines need more than the default
// depth to lay out (rustc's query depth, not runtime recursion).
#![recursion_limit = "256"]
use flamingock_core::error::ErrorChain as _;

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::Dynamo;
use flamingock_core::AuditStore;
use flamingock_dynamodb::{ConnectOptions, DynamoAuditStore};
use flamingock_test_support::standin_server::StandinServer;
use flamingock_test_support::tls::TestCerts;

/// An HTTPS-only moto of one check, with the certificates it was given.
struct TlsMoto {
    server: StandinServer,
    certs: TestCerts,
    dir: PathBuf,
}

impl TlsMoto {
    fn start() -> TlsMoto {
        let dir = std::env::temp_dir().join(format!(
            "flamingock-tls-moto-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let certs = TestCerts::generate(&dir).unwrap_or_else(|e| panic!("{e}"));
        let server = StandinServer::moto(Some(&certs)).unwrap_or_else(|e| panic!("{e}"));
        TlsMoto { server, certs, dir }
    }

    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}", self.server.port())
    }
}

impl Drop for TlsMoto {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client the way a user makes one: `ConnectOptions` with the CA.
async fn client(url: &str, ca: &std::path::Path) -> aws_sdk_dynamodb::Client {
    ConnectOptions::new()
        .endpoint_url(url)
        .region("us-east-1")
        .ca_certificate(std::fs::read(ca).expect("CA file"))
        .connect()
        .await
        .expect("a readable CA")
}

/// The suites' backend: each check gets a server of its own.
async fn over_tls() -> Option<Dynamo> {
    let server = TlsMoto::start();
    let url = server.url("localhost");
    let base = client(&url, &server.certs.ca()).await.config().clone();
    Some(Dynamo::with_config(url, base, Arc::new(server)))
}

mod audit {
    use super::over_tls;
    flamingock_test_support::audit_store_tests!(over_tls);
}

mod lock {
    use super::over_tls;
    flamingock_test_support::lock_tests!(over_tls);
}

mod pipeline {
    use super::over_tls;
    flamingock_test_support::pipeline_tests!(over_tls);
}

/// A short-lived store for the refusal checks: the SDK's own retries of a
/// failed handshake are kept few.
async fn refused(url: &str, ca: &std::path::Path) -> String {
    let client = client(url, ca).await;
    let conf = client
        .config()
        .to_builder()
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .build();
    let store = DynamoAuditStore::builder(aws_sdk_dynamodb::Client::from_conf(conf))
        .prefix("tls")
        .build()
        .await
        .expect("store");
    let err = store
        .snapshot()
        .await
        .expect_err("the endpoint must be refused");
    format!("{err:?}")
}

#[tokio::test]
async fn refusals_say_why() {
    let server = TlsMoto::start();
    // A CA that signed nothing here.
    let text = refused(&server.url("localhost"), &server.certs.other_ca()).await;
    assert!(
        text.contains("not signed by an authority this client trusts")
            && text.contains("ca_certificate"),
        "{text}"
    );
    // The certificate names localhost, not 127.0.0.1.
    let text = refused(&server.url("127.0.0.1"), &server.certs.ca()).await;
    assert!(text.contains("does not name the host"), "{text}");
    // A server without TLS, asked for HTTPS.
    let plain = StandinServer::moto(None).unwrap_or_else(|e| panic!("{e}"));
    let text = refused(
        &format!("https://localhost:{}", plain.port()),
        &server.certs.ca(),
    )
    .await;
    assert!(text.contains("does not accept TLS"), "{text}");
}

#[tokio::test]
async fn an_unreadable_authority_is_refused_before_any_request() {
    let err = ConnectOptions::new()
        .endpoint_url("https://localhost:1")
        .ca_certificate(b"not a certificate".to_vec())
        .connect()
        .await
        .expect_err("no PEM certificate");
    assert!(
        err.chain().to_string().contains("holds no PEM certificate"),
        "{err}"
    );
}
