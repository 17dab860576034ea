//! Every conformance suite against a real PostgreSQL server
//! (`FLAMINGOCK_TEST_POSTGRES_URL`). Each namespace is a fresh schema,
//! dropped with everything in it by `cleanup`. The backend under test is
//! `common::sut::Pg`; `tests/pgbouncer.rs` runs the same through PgBouncer.

// The nested futures of the pipeline over this backend's types need more
// than the default depth to lay out.
#![recursion_limit = "256"]

mod common;

use common::sut::Pg;

async fn pg() -> Option<Pg> {
    Some(Pg::direct(common::url()?))
}

mod audit {
    use super::pg;
    flamingock_test_support::audit_store_tests!(pg);
}

mod lock {
    use super::pg;
    flamingock_test_support::lock_tests!(pg);
}

mod pipeline {
    use super::pg;
    flamingock_test_support::pipeline_tests!(pg);
}

/// Bad input and failures: the same checks on every backend.
mod bad_input {
    use super::pg;
    flamingock_test_support::bad_input_tests!(pg);
}

/// The process-level suite: real child processes killed, paused and racing.
mod process {
    use super::pg;
    flamingock_test_support::process_tests!(pg);
}
