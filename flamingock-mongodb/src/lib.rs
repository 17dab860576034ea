//! # flamingock-mongodb
//!
//! MongoDB backend for Flamingock, on the official `mongodb` driver:
//!
//! * [`MongoAuditStore`]: the audit store (history, current state, fence);
//! * [`MongoLock`]: the fenced lease lock (its default lock);
//! * [`MongoTarget`]: MongoDB as a target system, whose changes receive a
//!   [`MongoContext`] (database + client session). A target from
//!   [`MongoAuditStore::shared_target`] commits each change together with its
//!   APPLIED entry in one session transaction (no crash ever needs an
//!   operator); [`MongoTarget::builder`] on another client/database commits the
//!   change with a marker document in its own transaction.
//!
//! ```no_run
//! use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, Stage};
//! use flamingock_mongodb::{MongoAuditStore, MongoContext, MongoTarget};
//! use flamingock_mongodb::mongodb::bson::{doc, Document};
//!
//! struct SeedPlans;
//! impl Change for SeedPlans {
//!     type Target = MongoTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("seed-plans").order("0001").author("ana")
//!     }
//!     async fn apply(&self, ctx: &mut MongoContext) -> ChangeResult {
//!         ctx.db()
//!             .collection::<Document>("plans")
//!             .insert_one(doc! { "_id": "free", "seats": 1 })
//!             .session(ctx.session())
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MongoAuditStore::connect("mongodb://localhost:27017/app?replicaSet=rs0").await?;
//! let runner = Flamingock::builder()
//!     .audit_store(store.clone())
//!     .target(store.shared_target("app-db").build().await?) // commits with its audit entry
//!     .stage(Stage::new("init").change(SeedPlans))
//!     .build()?;
//! let report = runner.run().await?;
//! println!("{report}");
//! # Ok(()) }
//! ```
//!
//! ## Documents
//!
//! With the default prefix `flamingock`:
//!
//! | collection | content |
//! |---|---|
//! | `flamingock_audit_history` | one document per state transition, never updated (except the `pending` mark, below) |
//! | `flamingock_audit_current` | one document per change, `_id` = change id: the snapshot is one read of it |
//! | `flamingock_fence` | `{_id: "fence", fence, seq, last_ms}` |
//! | `flamingock_lock` | `{_id: "flamingock", owner, token, expiresAt}` |
//! | `flamingock_sessions` | session ids of open shared transactions (see below) |
//! | `flamingock_markers` (targets of [`MongoTarget::builder`]) | `{_id: change id, run_id, fencing_token}` |
//!
//! Writes use write concern `majority` and reads read concern `majority`
//! (both configurable on the [`MongoAuditStoreBuilder`]).
//!
//! ## Append protocol (servers with transactions)
//!
//! One transaction: (1) a `findOneAndUpdate` with upsert on the fence
//! document, filtered on `fence <= token`, increments `seq` and sets
//! `last_ms = max($$NOW as ms, last_ms + 1)`. A duplicate key on the upsert
//! means the filter missed: the fence is above the token, and the append
//! fails with [`StoreError::Fenced`](flamingock_core::StoreError::Fenced).
//! Because this is a write, a concurrent `claim_fence` conflicts with the
//! transaction instead of slipping past a stale read. (2) The history
//! document is inserted with `created_at = last_ms` (the **server's clock**,
//! strictly increasing across all appends of the store, so strictly ordered
//! for one change) and `seq`. (3) The current-state document is read and
//! replaced iff the new entry supersedes it, and (4) the applied-set
//! summary ([`flamingock_core::summary`]) in the fence document moves by
//! the difference (`$inc` of the counts, `$bit xor` of the digest), so a
//! start with nothing pending reads that one document. `prepare` starts the
//! summary at zero on a store without entries (one transaction with that
//! check); a store with entries and no summary (an earlier version's) keeps
//! none, and without transactions there is none: the runner then reads the
//! snapshot. Then commit. Errors labelled
//! `TransientTransactionError` (write conflicts between concurrent
//! appenders) rerun the whole transaction with jittered backoff for up to
//! 60 s; a commit labelled `UnknownTransactionCommitResult` is retried as a
//! commit (up to 5 times), as the driver documentation prescribes. The
//! history is returned in `seq` order.
//!
//! ## Servers without transactions
//!
//! The store and [`MongoTarget::builder`] read the `hello` reply: no `setName`
//! and not a `mongos` (`msg: "isdbgrid"`), or no
//! `logicalSessionTimeoutMinutes`, means no transactions. Targets then
//! report `TargetCapabilities::transactions_unavailable(..)` with what to
//! do (run a replica set, even a single node, or declare the change
//! `.transactional(false)`), and the runner fails validation for every
//! change not declared non-transactional, before anything runs.
//!
//! The audit store stays usable for non-transactional changes. Each append is then:
//!
//! 1. the same conditional write on the fence document (fence check, `seq`,
//!    server clock): a fenced runner writes nothing;
//! 2. the history document, marked `pending: true`;
//! 3. the current-state document, by a conditional upsert whose filter requires
//!    that the stored state was written under a token `<=` ours and that the
//!    new entry supersedes it; a duplicate key means it did not match: when the
//!    stored state carries a higher token, a newer lease holder has already
//!    acted on this change, so our history document is withdrawn and the append
//!    fails with `Fenced`;
//! 4. the `pending` mark is cleared.
//!
//! [`snapshot`](flamingock_core::AuditStore::snapshot) folds in history
//! documents still marked pending (a crash between 2 and 4), found through
//! a sparse index, so the snapshot always equals the reduction of the
//! history. The one thing this cannot close without transactions: a runner
//! that passed step 1 and then stalls longer than its lease (60 s by
//! default; the runner also checks the lease before each change) while a new
//! holder claims the fence and reads the snapshot, may still record its
//! entry for a change the new holder has not written yet. Run a replica set
//! where that matters.
//! [`MongoAuditStoreBuilder::assume_no_transactions`] forces this mode on
//! any server (the tests use it).
//!
//! ## Transactions of a runner that lost its lease
//!
//! Fencing makes a stale commit impossible, but an open MongoDB transaction
//! also holds its documents: the new lease holder's transactions would fail
//! with `WriteConflict` on them until the server aborts the stale one
//! (`transactionLifetimeLimitSeconds`, 60 s by default). Shared-transaction
//! targets therefore register the session id of each open transaction in
//! `<prefix>_sessions`, and [`claim_fence`](flamingock_core::AuditStore::claim_fence)
//! (which only a runner that has just taken the lock calls, before it runs
//! anything) kills the registered sessions with `killSessions`, before and
//! after its write on the fence document, within 5 s. Separate targets
//! ([`MongoTarget::builder`]) register theirs in their own database
//! (`<prefix>_target_sessions`) and kill them through the core hook
//! `TargetSystem::on_claimed`, which the runner calls right after its claim.
//! This is best effort (fencing is the guarantee). Whatever the server does, the
//! runner never waits longer than its operation timeout
//! ([`Timeouts`](flamingock_core::Timeouts), 30 s by default): past it the
//! run ends with an error naming the store, the operation and this cause.
//!
//! ## Lock
//!
//! See [`MongoLock`]: one `findOneAndUpdate` with upsert and an update
//! pipeline; expiry by the server's `$$NOW`.
//!
//! ## TLS
//!
//! The driver's TLS options go in the connection string as written
//! (`tls=true`, `tlsCAFile=PATH`, `tlsCertificateKeyFile=PATH`...); the
//! driver uses rustls. Tested against a SecantusDB with TLS on and a test
//! CA (`tests/tls.rs`: the audit, lock and pipeline suites over TLS). A
//! refused handshake is reported with what to do: an unknown authority
//! names `tlsCAFile`, a certificate for another host says so, and a
//! handshake nobody completes (TLS asked of a server without it, or the
//! other way round, which the driver only sees as silence or a reset until
//! its server selection timeout) says to check `tls=true` against the
//! server. Lower `serverSelectionTimeoutMS` to hear about it sooner than
//! the driver's 30 seconds.
//!
//! ## SecantusDB differences
//!
//! The tests run against SecantusDB (a MongoDB wire-protocol server). Where
//! it departs from MongoDB's documented behaviour:
//!
//! * `$$NOW` compared with a stored date inside `$expr` (`{$lte:
//!   ["$expiresAt", "$$NOW"]}`) always evaluates true there (its `$$NOW` is a
//!   time-zone-aware value compared with naive stored dates), and
//!   `$subtract` of the two fails with an internal error. The lock therefore
//!   compares `{$toLong: "$expiresAt"}` with `{$toLong: "$$NOW"}`, and the
//!   store's clock is kept as milliseconds (`last_ms`): identical results on
//!   MongoDB, correct on both.
//! * When concurrent upserts race on the same `_id` and the filter has more
//!   than the `_id` equality, MongoDB answers the loser with a duplicate-key
//!   error; SecantusDB sometimes answers `findOneAndUpdate` with no document
//!   instead. Both are read as "someone else got there first".
//! * SecantusDB acknowledges writes before they are durable unless started
//!   with `--sync-on-commit` (MongoDB journals `majority` writes before
//!   acknowledging them): a killed SecantusDB loses acknowledged audit
//!   entries without that flag. The crash test starts its server with it.
//! * SecantusDB never aborts a transaction whose client was killed: it holds
//!   the documents that transaction wrote until its session is killed,
//!   where MongoDB aborts it after `transactionLifetimeLimitSeconds` (60 s
//!   by default). This crate does not rely on either: the next lock holder
//!   kills the registered sessions (see above), and every operation of the
//!   runner is bounded by its operation timeout, so a session that could not
//!   be killed ends the run with an error naming the cause instead of a
//!   hang. The process-level suite kills runners inside their transactions
//!   on SecantusDB and checks that the next runner goes on.
//! * Everything else this crate uses (transactions with write conflicts,
//!   `killSessions`, `hello` with and without `--standalone`,
//!   `findOneAndUpdate` with pipelines and upsert, duplicate keys on upsert,
//!   majority concerns, `$jsonSchema` validators) behaved as documented for MongoDB.
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod codec;
mod explain;
mod history;
mod lock;
mod sessions;
mod store;
mod target;
mod topology;
mod tx;

pub use history::read_mongock;
pub use lock::{MongoLock, MongoLockBuilder};
pub use store::{MongoAuditStore, MongoAuditStoreBuilder};
pub use target::{MongoContext, MongoTarget, MongoTargetBuilder, DEFAULT_TARGET_PREFIX};

/// The driver, re-exported so applications use the same version.
pub use mongodb;
