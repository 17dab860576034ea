//! Every conformance suite against the in-memory reference backends.
// The nested futures of the suites' pipelines need more than the default
// depth to lay out (rustc's query depth, not runtime recursion).
#![recursion_limit = "256"]

use flamingock_test_support::memory::memory;

mod audit {
    use super::memory;
    flamingock_test_support::audit_store_tests!(memory);
}

mod lock {
    use super::memory;
    flamingock_test_support::lock_tests!(memory);
}

mod pipeline {
    use super::memory;
    flamingock_test_support::pipeline_tests!(memory);
}
