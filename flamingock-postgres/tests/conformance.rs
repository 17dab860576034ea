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
    flamingock_test_support::bad_input_tests!(pg,
        run: [
            malformed_entries_are_named_not_misread,
            missing_tables_are_not_ready_without_auto_create,
            misshapen_tables_are_reported_not_used,
            fenced_shared_commit_rolls_the_change_back,
            connections_killed_mid_run_lose_nothing,
            wrong_credentials_are_clear_and_hide_the_password,
        ],
        ignored: [],
    );
}

/// The process-level suite: real child processes killed, paused and racing.
mod process {
    use super::pg;
    flamingock_test_support::process_tests!(pg);
}
