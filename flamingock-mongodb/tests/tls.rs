//! MongoDB over TLS: a private SecantusDB with TLS on a free port, its
//! certificate signed by a test CA for `localhost` only. The audit, lock and
//! pipeline suites pass with `tls=true&tlsCAFile=...` in the connection
//! string (the driver's options, passed through as written); a wrong CA, a
//! host name the certificate does not list and a server without TLS are
//! refused with errors that say what to do.
// The nested futures of the suites' pipelines need more than the default
// depth to lay out (rustc's query depth, not runtime recursion).
#![recursion_limit = "256"]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{Keep, Mongo};
use flamingock_mongodb::MongoAuditStore;
use flamingock_test_support::standin_server::StandinServer;
use flamingock_test_support::tls::TestCerts;

/// A TLS-only SecantusDB of one check, with the certificates it was given.
struct TlsMongo {
    server: StandinServer,
    certs: TestCerts,
    dir: PathBuf,
}

impl TlsMongo {
    fn start() -> TlsMongo {
        let dir = std::env::temp_dir().join(format!(
            "flamingock-tls-mongo-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let certs = TestCerts::generate(&dir).unwrap_or_else(|e| panic!("{e}"));
        let server = StandinServer::secantusdb(Some(&certs)).unwrap_or_else(|e| panic!("{e}"));
        TlsMongo { server, certs, dir }
    }

    /// A connection string for `host` trusting `ca`; server selection gives
    /// up after 3 s, so a refusal is reported quickly.
    fn url(&self, host: &str, ca: &std::path::Path) -> String {
        format!(
            "mongodb://{host}:{}/?directConnection=true&tls=true&tlsCAFile={}&serverSelectionTimeoutMS=3000",
            self.server.port(),
            ca.display()
        )
    }

    fn good_url(&self) -> String {
        self.url("localhost", &self.certs.ca())
    }
}

impl Drop for TlsMongo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The suites' backend: each check gets a server of its own. The plain-TCP
/// run (conformance.rs) is the one that repeats the concurrency check; here
/// the point is that everything works over TLS.
async fn over_tls() -> Option<Mongo> {
    let server = TlsMongo::start();
    let url = server.good_url();
    let reps = std::env::var("FLAMINGOCK_TLS_REPETITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    Some(Mongo::private(url, Keep(Arc::new(server)), reps))
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

/// The port speaks TLS only (a client without TLS gets no answer), so the
/// suites above really ran over TLS.
#[tokio::test]
async fn the_port_speaks_tls_only() {
    let server = TlsMongo::start();
    let plain = format!(
        "mongodb://localhost:{}/?directConnection=true&serverSelectionTimeoutMS=2000",
        server.server.port()
    );
    let err =
        MongoAuditStore::connect(&flamingock_test_support::services::with_path(&plain, "tls"))
            .await
            .expect_err("a client without TLS is refused");
    let text = format!("{err:?}");
    assert!(text.contains("no server completed the handshake"), "{text}");
}

#[tokio::test]
async fn refusals_say_why() {
    let server = TlsMongo::start();
    // A CA that signed nothing here.
    let err = MongoAuditStore::connect(&flamingock_test_support::services::with_path(
        &server.url("localhost", &server.certs.other_ca()),
        "tls",
    ))
    .await
    .expect_err("wrong CA");
    let text = format!("{err:?}");
    assert!(
        text.contains("not signed by an authority this client trusts")
            && text.contains("tlsCAFile"),
        "{text}"
    );
    // The certificate names localhost, not 127.0.0.1.
    let err = MongoAuditStore::connect(&flamingock_test_support::services::with_path(
        &server.url("127.0.0.1", &server.certs.ca()),
        "tls",
    ))
    .await
    .expect_err("host name mismatch");
    let text = format!("{err:?}");
    assert!(text.contains("does not name the host"), "{text}");
    // A server without TLS, asked for TLS.
    let plain = StandinServer::secantusdb(None).unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "mongodb://localhost:{}/?directConnection=true&tls=true&tlsCAFile={}&serverSelectionTimeoutMS=3000",
        plain.port(),
        server.certs.ca().display()
    );
    let err = MongoAuditStore::connect(&flamingock_test_support::services::with_path(&url, "tls"))
        .await
        .expect_err("TLS to a server without TLS");
    let text = format!("{err:?}");
    // SecantusDB, like mongod, does not answer a TLS hello on a plain port:
    // the driver sees no error, only silence until its selection timeout.
    assert!(
        text.contains("does not accept TLS") || text.contains("no server completed the handshake"),
        "{text}"
    );
}
