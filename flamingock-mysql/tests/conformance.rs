//! Every conformance suite against a real MySQL or MariaDB server
//! (`FLAMINGOCK_TEST_MYSQL_URL`). Each namespace is a fresh database,
//! dropped with everything in it by `cleanup`.
// The nested futures of the suites' pipelines need more than the default
// depth to lay out (rustc's query depth, not runtime recursion).
#![recursion_limit = "256"]

mod common;

use common::sut::My;

async fn my() -> Option<My> {
    Some(My::new(common::url()?))
}

mod audit {
    use super::my;
    flamingock_test_support::audit_store_tests!(my);
}

mod lock {
    use super::my;
    flamingock_test_support::lock_tests!(my);
}

mod pipeline {
    use super::my;
    flamingock_test_support::pipeline_tests!(my);
}

/// Bad input and failures: the same checks on every backend.
mod bad_input {
    use super::my;
    flamingock_test_support::bad_input_tests!(my);
}

/// The process-level suite: real child processes killed, paused and racing.
mod process {
    use super::my;
    flamingock_test_support::process_tests!(my);
}
