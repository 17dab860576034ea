//! The conformance suites through a real PgBouncer (a private one on a free
//! port, see `flamingock_test_support::pgbouncer`), in transaction pooling
//! mode (the handles declared `transaction_pooler(true)`) and in session
//! pooling mode (nothing declared), with 16 concurrent runners in each.
//! Then what a handle that was not told about a transaction pooler reports.

// The nested futures of the pipeline over this backend's types need more
// than the default depth to lay out.
#![recursion_limit = "256"]

use flamingock_core::error::ErrorChain as _;
mod common;

use std::sync::Arc;

use common::sut::Pg;
use flamingock_test_support::pgbouncer::{PgBouncer, PoolMode};

/// A private PgBouncer in `mode` for one test (stopped when the test's
/// backend is dropped, even when the test panics: nothing outlives the run).
fn bouncer(mode: PoolMode) -> Option<PgBouncer> {
    let upstream = common::url()?;
    Some(PgBouncer::start(&upstream, mode).unwrap_or_else(|e| panic!("{e}")))
}

fn through(mode: PoolMode) -> Option<Pg> {
    let bouncer = bouncer(mode)?;
    let direct = common::url()?;
    Some(Pg {
        admin: common::pool(&direct, 2),
        url: bouncer.url(),
        pooler: mode == PoolMode::Transaction,
        // The concurrency check is the point here; fewer rounds keep CI short
        // (FLAMINGOCK_PGBOUNCER_REPETITIONS for more).
        repetitions: std::env::var("FLAMINGOCK_PGBOUNCER_REPETITIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
        // Every operation crosses the pooler too (and, in transaction mode,
        // costs two more round trips): with 16 runners on 2 cores a 1.2 s
        // lease leaves the refresher too little margin.
        lease: Some(std::time::Duration::from_millis(2500)),
        keep_alive: Some(Arc::new(bouncer)),
        idle: flamingock_test_support::postgres::IDLE,
    })
}

async fn transaction_mode() -> Option<Pg> {
    through(PoolMode::Transaction)
}

async fn session_mode() -> Option<Pg> {
    through(PoolMode::Session)
}

mod transaction {
    mod audit {
        use super::super::transaction_mode;
        flamingock_test_support::audit_store_tests!(transaction_mode);
    }
    mod lock {
        use super::super::transaction_mode;
        flamingock_test_support::lock_tests!(transaction_mode);
    }
    mod pipeline {
        use super::super::transaction_mode;
        flamingock_test_support::pipeline_tests!(transaction_mode);
    }
}

mod session {
    mod audit {
        use super::super::session_mode;
        flamingock_test_support::audit_store_tests!(session_mode);
    }
    mod lock {
        use super::super::session_mode;
        flamingock_test_support::lock_tests!(session_mode);
    }
    mod pipeline {
        use super::super::session_mode;
        flamingock_test_support::pipeline_tests!(session_mode);
    }
}

/// A store that was not told it sits behind a transaction pooler fails (its
/// named statements meet other clients' on the shared server connections),
/// and the error says what to declare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_transaction_pooler_is_named_in_the_error() {
    use flamingock_core::AuditStore;
    let Some(bouncer) = bouncer(PoolMode::Transaction) else {
        return;
    };
    let url = bouncer.url();
    let schema = flamingock_test_support::namespace("undeclared");
    // Two clients, so that the second meets the first's statements.
    let mut errors = Vec::new();
    for _ in 0..2 {
        let result = async {
            let options = common::options(&url).extra_float_digits(None);
            let store =
                flamingock_postgres::PostgresAuditStore::builder(common::pool_with(options, 1))
                    .schema(&schema)
                    .build()
                    .await?;
            store.prepare().await?;
            store.snapshot().await?;
            store.fence().await.map(drop)
        }
        .await;
        if let Err(e) = result {
            errors.push(e.chain().to_string());
        }
    }
    assert!(
        !errors.is_empty(),
        "an undeclared transaction pooler went unnoticed"
    );
    assert!(
        errors.iter().all(|e| e.contains("?pooler=transaction")),
        "{errors:#?}"
    );
    let admin = common::pool(&common::url().expect("url"), 1);
    common::drop_schemas(&admin, &[&schema])
        .await
        .expect("drop");
}
