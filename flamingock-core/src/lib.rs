//! # flamingock-core
//!
//! Change-as-Code for Rust: an application ships an ordered list of
//! **changes** to the systems it depends on (SQL schemas, MongoDB, DynamoDB,
//! brokers, feature flags...). At start-up the runner applies every pending
//! change exactly once, in order, records each execution in an **audit
//! store**, and serialises concurrent replicas with a fenced **distributed
//! lock**. When it cannot guarantee a safe outcome it stops and says exactly
//! what an operator must resolve.
//!
//! This crate holds the traits ([`Change`], [`TargetSystem`], [`AuditStore`],
//! [`LockProvider`]), the whole algorithm (validation, planning, execution
//! strategies, lock protocol and fencing, events, report, operations) and
//! in-memory reference backends ([`memory`]). Database backends live in their
//! own crates and implement only small primitives.
//!
//! ```
//! use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
//! use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, Stage};
//!
//! struct CreateUsers;
//! impl Change for CreateUsers {
//!     type Target = InMemoryTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("create-users").order("0001").author("ana")
//!     }
//!     async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
//!         tx.put("table:users", "id, email");
//!         Ok(())
//!     }
//! }
//!
//! struct SeedAdmin;
//! impl Change for SeedAdmin {
//!     type Target = InMemoryTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("seed-admin").order("0002").author("ana")
//!     }
//!     async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
//!         tx.put("users:1", "admin@example.com");
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flamingock_core::Error> {
//! let store = InMemoryAuditStore::new();
//! let runner = Flamingock::builder()
//!     .audit_store(store.clone())
//!     .target(store.shared_target("app-db")) // same database: shared transactions
//!     .stage(Stage::new("init").change(CreateUsers).change(SeedAdmin))
//!     .build()?;
//!
//! let report = runner.run().await?;
//! assert_eq!(report.applied(), ["create-users", "seed-admin"]);
//!
//! // A second start finds nothing pending and does not even take the lock.
//! let again = runner.run().await?;
//! assert_eq!(again.totals().skipped, 2);
//! assert!(!again.took_lock);
//! # Ok(())
//! # }
//! ```
//!
//! ## Safety model
//!
//! * Each change's strategy follows from its target: **shared transaction**
//!   (target and audit store are one database: effect and APPLIED entry
//!   commit together, so no crash ever needs an operator), **separate
//!   transaction** (optionally with a marker record in the target that lets
//!   the next run resolve a crash after commit by itself) and
//!   **non-transactional** (with the change's rollback, if it has one).
//! * What the next run does with an interrupted change is the pure function
//!   [`decide`].
//! * Fencing does not trust the lock service. Right after taking the lock the
//!   runner claims an **epoch** from the audit store itself
//!   ([`AuditStore::claim_fence`]: an atomic increment, strictly greater than
//!   every epoch claimed before); every audit write (and every
//!   shared-transaction commit) carries it and is rejected atomically when a
//!   newer epoch has been claimed since. A runner that lost its lease can
//!   therefore never record, or in the shared strategy commit, anything, even
//!   when the lock service forgot its tokens (a Redis restart without
//!   persistence) and let two runners believe they hold the lock. The lease
//!   is also checked, with a margin, before every change, commit and audit write.
//! * Nothing waits without a bound or without saying so: every store, lock
//!   and target operation runs under [`Timeouts::operation`]; a change may be
//!   given [`Timeouts::change`]; a wait for the lock is reported (an
//!   [`Event::LockWaiting`] and an INFO log naming the holder and its expiry)
//!   when it starts and every few seconds, backs off from 25 ms with jitter,
//!   and ends as soon as the audit shows another runner did the work.
//! * [`Flamingock::run_until`] stops cleanly on a shutdown signal: no new
//!   change, the current one finishes or rolls back, the lock is released.
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod audit;
pub mod backend_guide;
mod baseline;
mod builder;
pub mod change;
mod deadline;
pub mod decision;
#[doc(hidden)]
pub mod discovery;
pub mod error;
pub mod events;
#[cfg(feature = "testing")]
pub mod fault;
#[cfg(not(feature = "testing"))]
mod fault;
pub mod import;
pub mod lock;
mod marker_settings;
pub mod memory;
mod model;
pub mod names;
mod operations;
pub mod order;
mod pipeline;
mod plan;
pub mod report;
pub mod retry;
mod runner;
pub mod shared_audit;
mod shutdown;
mod stage;
mod stop;
mod strategy;
pub mod summary;
pub mod target;
pub mod tls;
pub mod validate;

pub use audit::{
    audit_clock, reduce_snapshot, AuditEntry, AuditState, AuditStore, ErrorInfo, HistoryFilter,
    TxStrategy,
};
pub use builder::FlamingockBuilder;
pub use change::{Change, ChangeContext, ChangeMeta, ChangeResult, RecoveryStrategy};
pub use deadline::Timeouts;
pub use decision::{decide, Decision};
pub use error::{
    BlockedChange, BoxError, ChangeFailure, Error, LockError, NoCheck, NoRollback, StoreError,
    TargetError,
};
pub use events::{Event, EventListener};
pub use lock::{Acquire, Lease, LockConfig, LockInfo, LockProvider};
pub use marker_settings::MarkerSettings;
pub use plan::{PlanAction, PlanItem};
pub use report::{ChangeOutcome, ChangeReport, RunReport, Totals};
pub use retry::{RetryPolicy, Transient};
pub use runner::Flamingock;
pub use shared_audit::{AppendInTransaction, SharedAudit};
pub use stage::Stage;
pub use target::{
    CommitWith, ContextMode, DependencyTarget, Marker, TargetCapabilities, TargetSystem,
};
pub use validate::{CheckPolicy, DriftPolicy, OrphanPolicy, ValidationErrors, ValidationProblem};

/// Re-exported so backends implement the object-safe traits with the same macro.
pub use async_trait::async_trait;
