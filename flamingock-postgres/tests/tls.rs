//! TLS connections to a private PostgreSQL server with TLS on (a test CA,
//! a server certificate for `localhost`): `sslmode=verify-full` with the CA
//! connects and runs a pipeline over TLS; a wrong CA, a host name the
//! certificate does not list, and a server without TLS when TLS is required
//! each fail with an error that says what to do.
#![cfg(feature = "tls")]
// The nested futures of the pipeline over this backend's types need more
// than the default depth to lay out.
#![recursion_limit = "256"]
use flamingock_core::error::ErrorChain as _;

mod common;

use std::sync::Arc;

use common::sut::Pg;

use flamingock_core::{AuditStore, Change, ChangeMeta, ChangeResult, Flamingock, Stage};
use flamingock_postgres::{PgContext, PostgresAuditStore, PostgresTarget};
use flamingock_test_support::pgbouncer::{PgBouncer, PoolMode};
use flamingock_test_support::tls::{TestCerts, TlsPostgres};

struct CreateT;
impl Change for CreateT {
    type Target = PostgresTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("create-t").order("0001")
    }
    async fn apply(&self, ctx: &mut PgContext) -> ChangeResult {
        sqlx::query("CREATE TABLE t (x int)")
            .execute(ctx.conn())
            .await?;
        // The change's own connection is encrypted.
        let ssl: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(ctx.conn())
                .await?;
        if !ssl {
            return Err("the change's connection is not encrypted".into());
        }
        Ok(())
    }
}

/// Removes the certificates' directory when the test ends.
struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn server() -> (Cleanup, TestCerts, TlsPostgres) {
    let dir = std::env::temp_dir().join(format!(
        "flamingock-tls-certs-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let cleanup = Cleanup(dir.clone());
    let certs = TestCerts::generate(&dir).unwrap_or_else(|e| panic!("{e}"));
    let pg = TlsPostgres::start(&certs).unwrap_or_else(|e| panic!("{e}"));
    (cleanup, certs, pg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_ca_connects_and_refusals_say_why() {
    let (_dir, certs, pg) = server();
    let ca = certs.ca().display().to_string();

    // Verified: the authority and the host name.
    let url = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let store = PostgresAuditStore::connect(&url)
        .await
        .expect("verify-full");
    let report = Flamingock::builder()
        .audit_store(store.clone())
        .target(
            store
                .shared_target("db")
                .build()
                .await
                .expect("shared target"),
        )
        .stage(Stage::new("s").change(CreateT))
        .build()
        .expect("build")
        .run()
        .await
        .expect("run over TLS");
    assert_eq!(report.applied(), ["create-t"]);
    assert_eq!(store.snapshot().await.expect("snapshot").len(), 1);

    // verify-ca checks the authority only: the address is fine.
    let url = pg.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    PostgresAuditStore::connect(&url).await.expect("verify-ca");

    // A CA that signed nothing here.
    let other = certs.other_ca().display().to_string();
    let url = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    );
    let err = PostgresAuditStore::connect(&url)
        .await
        .expect_err("wrong CA");
    let text = err.chain().to_string();
    assert!(text.contains("sslrootcert"), "{text}");

    // The certificate names localhost, not 127.0.0.1.
    let url = pg.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let err = PostgresAuditStore::connect(&url)
        .await
        .expect_err("host name mismatch");
    let text = err.chain().to_string();
    assert!(text.contains("verify-ca"), "{text}");
}

/// The audit, lock and pipeline suites over `sslmode=verify-full`, each
/// check on a private TLS server of its own (stopped with the check).
async fn over_tls() -> Option<Pg> {
    let (cleanup, certs, server) = server();
    let url = server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", certs.ca().display()),
    );
    let mut pg = Pg::direct(url);
    // 16 concurrent runners over TLS; fewer rounds keep CI short.
    pg.repetitions = 10;
    pg.keep_alive = Some(Arc::new((cleanup, certs, server)));
    Some(pg)
}

mod suites {
    mod audit {
        use super::super::over_tls;
        flamingock_test_support::audit_store_tests!(over_tls);
    }
    mod lock {
        use super::super::over_tls;
        flamingock_test_support::lock_tests!(over_tls);
    }
    mod pipeline {
        use super::super::over_tls;
        flamingock_test_support::pipeline_tests!(over_tls);
    }
}

/// A server without TLS (here PgBouncer, which has none configured) when
/// the URL requires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_from_a_server_without_it_says_so() {
    let Some(upstream) = common::url() else {
        return;
    };
    let bouncer = PgBouncer::start(&upstream, PoolMode::Session).unwrap_or_else(|e| panic!("{e}"));
    let sep = if bouncer.url().contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{sep}sslmode=require", bouncer.url());
    let err = PostgresAuditStore::connect(&url)
        .await
        .expect_err("no TLS there");
    let text = err.chain().to_string();
    assert!(text.contains("does not accept TLS"), "{text}");
}
