//! Every conformance suite against a real DynamoDB-API server
//! (`FLAMINGOCK_TEST_DYNAMODB_URL`; see the crate docs for running moto's
//! server). DynamoDB-specific checks are in `dynamodb.rs`.

mod common;
use common::dynamo;

mod audit {
    use super::dynamo;
    flamingock_test_support::audit_store_tests!(dynamo);
}

mod lock {
    use super::dynamo;
    flamingock_test_support::lock_tests!(dynamo);
}

mod pipeline {
    use super::dynamo;
    flamingock_test_support::pipeline_tests!(dynamo);
}

/// The process-level suite: real child processes killed, paused and racing.
mod process {
    use super::dynamo;
    flamingock_test_support::process_tests!(dynamo);
}
