//! Every conformance suite against a real DynamoDB-API server
//! (`FLAMINGOCK_TEST_DYNAMODB_URL`; see the crate docs for running moto's
//! server). DynamoDB-specific checks are in `dynamodb.rs`.
// The nested futures of the suites' pipelines need more than the default
// depth to lay out (rustc's query depth, not runtime recursion).
#![recursion_limit = "256"]

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

/// Bad input and failures: the same checks on every backend.
mod bad_input {
    use super::dynamo;
    flamingock_test_support::bad_input_tests!(dynamo,
        run: [
            malformed_entries_are_named_not_misread,
            missing_tables_are_not_ready_without_auto_create,
            misshapen_tables_are_reported_not_used,
            fenced_shared_commit_rolls_the_change_back,
        ],
        ignored: [
            connections_killed_mid_run_lose_nothing = "DynamoDB is an HTTP API: there is no server connection to kill (a lost answer is dynamodb.rs's lost_answer_after_sending_is_outcome_unknown)",
            wrong_credentials_are_clear_and_hide_the_password = "the stand-ins (moto here, DynamoDB Local in the workflow) accept any credentials",
        ],
    );
}

/// The process-level suite: real child processes killed, paused and racing.
mod process {
    use super::dynamo;
    flamingock_test_support::process_tests!(dynamo);
}
