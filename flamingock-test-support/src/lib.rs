//! # flamingock-test-support
//!
//! The conformance suites every Flamingock backend runs against a real
//! server, and the helpers that provision those servers for tests.
//!
//! * [`audit_suite`]: the [`AuditStore`](flamingock_core::AuditStore) contract
//!   (append, snapshot reduction and ties, history filters, epoch claims and
//!   fence rejection, concurrent appends).
//! * [`lock_suite`]: the [`LockProvider`](flamingock_core::LockProvider)
//!   contract (mutual exclusion under concurrent acquirers, expiry and
//!   takeover, owner-only extend/release, strictly increasing tokens, force
//!   release) and the waiting protocol on top of it.
//! * [`pipeline_suite`]: the runner end to end on a backend's targets:
//!   exactly-once under concurrent runners, every cell of the crash table,
//!   lost leases, blocked stages, fix operations, validate-only, the
//!   lock-free fast path.
//! * [`bad_input_suite`]: stored entries that do not parse, missing and
//!   misshapen tables, a fence rejection inside a change's transaction,
//!   connections killed mid-run, wrong credentials; backends give small hooks.
//! * [`process_suite`]: the same runner in real child processes, killed at
//!   every fault point and at random instants, 16 racing, a holder paused
//!   past its lease, multi-step changes killed inside a step.
//!
//! Each suite is a set of plain `pub async fn`s taking the implementation
//! under test, plus a macro that expands to one `#[tokio::test]` per check:
//!
//! ```ignore
//! async fn sut() -> MyStoreUnderTest { MyStoreUnderTest::from_env().await }
//! flamingock_test_support::audit_store_tests!(sut);
//! ```
//!
//! Every check works in its own random [`namespace`] and cleans up after itself.
//!
//! Private servers a test starts on a free port and stops when it ends:
//! [`pgbouncer`] (PgBouncer in either pooling mode), [`tls`] (a test CA and a
//! PostgreSQL with TLS) and [`standin_server`] (SecantusDB and moto, with or
//! without TLS).
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod audit_suite;
pub mod bad_input_suite;
pub mod faults;
pub mod lock_suite;
pub mod memory;
pub mod pgbouncer;
pub mod pipeline_suite;
#[cfg(feature = "postgres")]
pub mod postgres;
mod private_server;
pub mod process_suite;
pub mod services;
pub mod standin_server;
pub mod tls;

pub use services::{namespace, require_service, ServiceSpec};

/// The error type of implementations under test.
pub type BoxError = flamingock_core::BoxError;
