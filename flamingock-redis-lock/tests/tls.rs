//! The lock over TLS (`rediss://`): a private `redis-server` with TLS on a
//! free port, its certificate signed by a test CA for `localhost` only. The
//! lock suite passes over it; a wrong CA, a host name the certificate does
//! not list and a server without TLS are refused with errors that say why.
#![cfg(feature = "tls")]
// The nested futures of the suites' pipelines need more than the default
// depth to lay out (rustc's query depth, not runtime recursion).
#![recursion_limit = "256"]
use flamingock_core::error::ErrorChain as _;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flamingock_core::{async_trait, BoxError, LockProvider};
use flamingock_redis_lock::RedisLock;
use flamingock_test_support::lock_suite::LockUnderTest;
use flamingock_test_support::tls::TestCerts;

/// A TLS-only `redis-server` of this test (no persistence), stopped and its
/// certificates removed when dropped.
struct TlsRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
    certs: TestCerts,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = std::env::temp_dir().join(format!(
            "flamingock-tls-redis-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let certs = TestCerts::generate(&dir).unwrap_or_else(|e| panic!("{e}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(certs.server_cert())
            .arg("--tls-key-file")
            .arg(certs.server_key())
            .arg("--tls-ca-cert-file")
            .arg(certs.ca())
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for this test (Debian: apt-get install redis-server)");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the TLS redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsRedis {
            child,
            port,
            dir,
            certs,
        }
    }

    fn url(&self, host: &str) -> String {
        format!("rediss://{host}:{}/", self.port)
    }

    fn ca(&self) -> Vec<u8> {
        std::fs::read(self.certs.ca()).expect("CA file")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The lock suite's backend: each check gets a server of its own.
struct OverTls {
    server: Arc<TlsRedis>,
}

async fn over_tls() -> Option<OverTls> {
    Some(OverTls {
        server: Arc::new(TlsRedis::start()),
    })
}

#[async_trait]
impl LockUnderTest for OverTls {
    async fn open(&self, ns: &str) -> Result<Arc<dyn LockProvider>, BoxError> {
        Ok(Arc::new(
            RedisLock::builder(self.server.url("localhost"))
                .name(ns)
                .ca_certificate(self.server.ca())
                .build()
                .await?,
        ))
    }
    async fn cleanup(&self, _ns: &str) -> Result<(), BoxError> {
        // The server is this check's own and stops with it.
        Ok(())
    }
}

mod lock {
    use super::over_tls;
    flamingock_test_support::lock_tests!(over_tls);
}

#[tokio::test]
async fn refusals_say_why() {
    let server = TlsRedis::start();
    // A CA that signed nothing here.
    let other = std::fs::read(server.certs.other_ca()).expect("other CA");
    let err = RedisLock::builder(server.url("localhost"))
        .name("tls")
        .ca_certificate(other)
        .build()
        .await
        .expect_err("wrong CA");
    assert!(err.chain().to_string().contains("ca_certificate"), "{err}");
    // The certificate names localhost, not 127.0.0.1.
    let err = RedisLock::builder(server.url("127.0.0.1"))
        .name("tls")
        .ca_certificate(server.ca())
        .build()
        .await
        .expect_err("host name mismatch");
    assert!(
        err.chain().to_string().contains("does not name the host"),
        "{err}"
    );
    // The system's roots do not include the test CA.
    let err = RedisLock::builder(server.url("localhost"))
        .name("tls")
        .build()
        .await
        .expect_err("untrusted without the CA");
    assert!(err.chain().to_string().contains("cannot connect"), "{err}");
    // A server without TLS.
    {
        let plain =
            flamingock_test_support::require_service(&flamingock_test_support::services::REDIS);
        let url = plain.replacen("redis://", "rediss://", 1);
        let err = RedisLock::builder(&url)
            .name("tls")
            .ca_certificate(server.ca())
            .connection_timeout(Duration::from_secs(2))
            .build()
            .await
            .expect_err("no TLS there");
        assert!(err.chain().to_string().contains("cannot connect"), "{err}");
    }
}
