//! Every conformance suite against a real MongoDB-protocol server
//! (`FLAMINGOCK_TEST_MONGODB_URL`, and `FLAMINGOCK_TEST_MONGODB_STANDALONE_URL`
//! for a server without a replica set).
// The nested futures of the suites' pipelines need more than the default
// depth to lay out (rustc's query depth, not runtime recursion).
#![recursion_limit = "256"]

mod common;
use common::{mongo, mongo_standalone, mongo_without_transactions};

mod audit {
    use super::mongo;
    flamingock_test_support::audit_store_tests!(mongo);
}

mod lock {
    use super::mongo;
    flamingock_test_support::lock_tests!(mongo);
}

mod pipeline {
    use super::mongo;
    flamingock_test_support::pipeline_tests!(mongo);
}

/// Bad input and failures: the same checks on every backend.
mod bad_input {
    use super::mongo;
    flamingock_test_support::bad_input_tests!(mongo,
        run: [
            malformed_entries_are_named_not_misread,
            missing_tables_are_not_ready_without_auto_create,
            fenced_shared_commit_rolls_the_change_back,
            wrong_credentials_are_clear_and_hide_the_password,
        ],
        ignored: [
            misshapen_tables_are_reported_not_used = "not applicable: MongoDB collections have no fixed shape (documents of another shape are malformed entries)",
            connections_killed_mid_run_lose_nothing = "MongoDB has no command that ends another client's connections; tests/errors.rs kills a private server in the middle of a run instead",
        ],
    );
}

/// The suites that apply to a server without transactions, on `$sut`.
macro_rules! without_transactions_suites {
    ($sut:ident) => {
        mod audit {
            use super::super::$sut;
            flamingock_test_support::audit_store_tests!($sut,
            ignored: [summary_matches_snapshot = "without transactions the current state and the fence document cannot move together, so the store keeps no summary and its start-up check reads the snapshot"]);
        }

        mod pipeline {
            use super::super::$sut;
            flamingock_test_support::pipeline_tests!($sut,
                run: [
                    applies_in_order_then_fast_path,
                    exactly_once_concurrent_runners,
                    crash_table_non_transactional,
                    crash_table_non_transactional_with_check,
                    failing_non_transactional_follows_its_rollback,
                    failing_non_transactional_resolved_by_check,
                    panicking_change_releases_lock,
                    blocked_stages_report_every_blocked_change,
                    fix_takes_the_lock,
                    validate_only_applies_nothing,
                    orphan_audit_entries,
                    plan_lists_strategies,
                    reading_creates_nothing,
                ],
                ignored: [
                    crash_table_shared_tx = "not applicable: a server without transactions has no shared-transaction target",
                    crash_table_separate_tx_with_marker = "not applicable: a server without transactions has no separate transactional target",
                    crash_table_separate_tx = "not applicable: a server without transactions has no separate transactional target",
                    lost_lease_cannot_commit = "not applicable: needs a transactional target, which a server without transactions lacks",
                    failing_shared_tx_rolls_back = "not applicable: a server without transactions has no shared-transaction target",
                    failing_separate_tx_with_marker_rolls_back = "not applicable: a server without transactions has no separate transactional target",
                    failing_separate_tx_rolls_back = "not applicable: a server without transactions has no separate transactional target",
                ],
            );
        }
    };
}

/// The same suites with the protocol for servers without transactions,
/// forced on the replica set.
mod without_transactions {
    without_transactions_suites!(mongo_without_transactions);
}

/// The same suites on a standalone server, whose lack of transactions the
/// store detects from the server's `hello` (nothing forced).
mod standalone {
    without_transactions_suites!(mongo_standalone);
}

/// The process-level suite: real child processes killed, paused and racing.
mod process {
    use super::mongo;
    flamingock_test_support::process_tests!(mongo);
}
