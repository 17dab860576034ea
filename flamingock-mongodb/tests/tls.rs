//! MongoDB over TLS: a private SecantusDB with TLS on a free port, its
//! certificate signed by a test CA for `localhost` only. The audit, lock and
//! pipeline suites pass with `tls=true&tlsCAFile=...` in the connection
//! string (the driver's options, passed through as written); a wrong CA, a
//! host name the certificate does not list and a server without TLS are
//! refused with errors that say what to do.

use std::path::PathBuf;
use std::sync::Arc;

use flamingock_core::{AuditStore, BoxError, LockProvider};
use flamingock_mongodb::mongodb::bson::{doc, Bson, Document};
use flamingock_mongodb::mongodb::Client;
use flamingock_mongodb::{MongoAuditStore, MongoContext, MongoTarget};
use flamingock_test_support::audit_suite::AuditStoreUnderTest;
use flamingock_test_support::lock_suite::LockUnderTest;
use flamingock_test_support::pipeline_suite::{
    PipelineCapabilities, PipelineEnv, PipelineUnderTest,
};
use flamingock_test_support::standin_server::StandinServer;
use flamingock_test_support::tls::TestCerts;
use futures::future::BoxFuture;

/// A TLS-only SecantusDB of one check, with the certificates it was given.
struct TlsMongo {
    server: StandinServer,
    certs: TestCerts,
    dir: PathBuf,
}

impl TlsMongo {
    fn start() -> Option<TlsMongo> {
        let dir = std::env::temp_dir().join(format!(
            "flamingock-tls-mongo-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let certs = TestCerts::generate(&dir).unwrap_or_else(|e| panic!("{e}"));
        let server = StandinServer::secantusdb(Some(&certs)).unwrap_or_else(|e| panic!("{e}"))?;
        Some(TlsMongo { server, certs, dir })
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

/// The suites' backend: each check gets a server of its own.
struct OverTls {
    server: Arc<TlsMongo>,
}

async fn over_tls() -> Option<OverTls> {
    Some(OverTls {
        server: Arc::new(TlsMongo::start()?),
    })
}

impl OverTls {
    async fn client(&self) -> Result<Client, BoxError> {
        Ok(Client::with_uri_str(self.server.good_url()).await?)
    }

    async fn store(&self, ns: &str) -> Result<MongoAuditStore, BoxError> {
        Ok(MongoAuditStore::connect(&self.server.good_url(), ns).await?)
    }
}

#[flamingock_core::async_trait]
impl AuditStoreUnderTest for OverTls {
    async fn open(&self, ns: &str) -> Result<Arc<dyn AuditStore>, BoxError> {
        Ok(Arc::new(self.store(ns).await?))
    }
    async fn cleanup(&self, _ns: &str) -> Result<(), BoxError> {
        // The server is this check's own, in memory, and stops with it.
        Ok(())
    }
}

#[flamingock_core::async_trait]
impl LockUnderTest for OverTls {
    async fn open(&self, ns: &str) -> Result<Arc<dyn LockProvider>, BoxError> {
        Ok(Arc::new(self.store(ns).await?.lock()))
    }
    async fn cleanup(&self, _ns: &str) -> Result<(), BoxError> {
        Ok(())
    }
}

#[flamingock_core::async_trait]
impl PipelineUnderTest for OverTls {
    type Target = MongoTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<MongoTarget>, BoxError> {
        let store = self.store(ns).await?;
        let elsewhere = format!("{ns}_t");
        let other = self.client().await?;
        let marker = MongoTarget::new("separate-marker", other.clone(), &elsewhere).await?;
        let separate = MongoTarget::new("separate", other, &elsewhere)
            .await?
            .without_marker();
        Ok(PipelineEnv {
            store: Arc::new(store.clone()),
            lock: Arc::new(store.lock()),
            shared: Some(store.target("shared")),
            separate_marker: Some(marker),
            separate: Some(separate),
        })
    }

    fn bump<'a>(ctx: &'a mut MongoContext, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            ctx.db()
                .collection::<Document>("counters")
                .update_one(doc! { "_id": key }, doc! { "$inc": { "n": 1_i64 } })
                .upsert(true)
                .session(ctx.session())
                .await?;
            Ok(())
        })
    }

    async fn count(&self, target: &MongoTarget, key: &str) -> Result<u64, BoxError> {
        let doc = target
            .database()
            .collection::<Document>("counters")
            .find_one(doc! { "_id": key })
            .await?;
        Ok(match doc.as_ref().and_then(|d| d.get("n")) {
            None => 0,
            Some(Bson::Int64(n)) => u64::try_from(*n)?,
            Some(Bson::Int32(n)) => u64::try_from(*n)?,
            Some(other) => return Err(format!("counter {key} is {other}").into()),
        })
    }

    async fn cleanup(&self, _ns: &str) -> Result<(), BoxError> {
        Ok(())
    }

    async fn footprint(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        let client = self.client().await?;
        let mut found = Vec::new();
        for db in [ns.to_owned(), format!("{ns}_t")] {
            let mut names = client.database(&db).list_collection_names().await?;
            names.retain(|n| n != "counters");
            names.sort();
            found.extend(names.into_iter().map(|n| format!("{db}.{n}")));
        }
        Ok(found)
    }

    fn capabilities(&self) -> PipelineCapabilities {
        // The plain-TCP run (conformance.rs) is the one that repeats; here
        // the point is that everything works over TLS. Lease as there.
        let mut caps = PipelineCapabilities::default().runners(16).repetitions(
            std::env::var("FLAMINGOCK_TLS_REPETITIONS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(3),
        );
        caps.lease = std::time::Duration::from_millis(2500);
        caps
    }
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
    let Some(server) = TlsMongo::start() else {
        return;
    };
    let plain = format!(
        "mongodb://localhost:{}/?directConnection=true&serverSelectionTimeoutMS=2000",
        server.server.port()
    );
    let err = MongoAuditStore::connect(&plain, "tls")
        .await
        .expect_err("a client without TLS is refused");
    let text = format!("{err:?}");
    assert!(text.contains("no server completed the handshake"), "{text}");
}

#[tokio::test]
async fn refusals_say_why() {
    let Some(server) = TlsMongo::start() else {
        return;
    };
    // A CA that signed nothing here.
    let err = MongoAuditStore::connect(&server.url("localhost", &server.certs.other_ca()), "tls")
        .await
        .expect_err("wrong CA");
    let text = format!("{err:?}");
    assert!(
        text.contains("not signed by an authority this client trusts")
            && text.contains("tlsCAFile"),
        "{text}"
    );
    // The certificate names localhost, not 127.0.0.1.
    let err = MongoAuditStore::connect(&server.url("127.0.0.1", &server.certs.ca()), "tls")
        .await
        .expect_err("host name mismatch");
    let text = format!("{err:?}");
    assert!(text.contains("does not name the host"), "{text}");
    // A server without TLS, asked for TLS.
    let Some(plain) = StandinServer::secantusdb(None).unwrap_or_else(|e| panic!("{e}")) else {
        return;
    };
    let url = format!(
        "mongodb://localhost:{}/?directConnection=true&tls=true&tlsCAFile={}&serverSelectionTimeoutMS=3000",
        plain.port(),
        server.certs.ca().display()
    );
    let err = MongoAuditStore::connect(&url, "tls")
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
