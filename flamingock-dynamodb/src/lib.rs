//! # flamingock-dynamodb
//!
//! DynamoDB backend for Flamingock: an audit store ([`DynamoAuditStore`]), a
//! fenced lease lock ([`DynamoLock`]) and a transactional target
//! ([`DynamoTarget`]) whose changes commit in ONE `TransactWriteItems`
//! together with their audit entry and the fence check.
//!
//! ```no_run
//! use flamingock_dynamodb::aws_sdk_dynamodb::types::AttributeValue;
//! use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, Stage};
//! use flamingock_dynamodb::{connect, DynamoAuditStore, DynamoContext, DynamoTarget};
//! use std::collections::HashMap;
//!
//! struct SeedPlans;
//! impl Change for SeedPlans {
//!     type Target = DynamoTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("seed-plans").order("0001").author("ana")
//!     }
//!     async fn apply(&self, ctx: &mut DynamoContext) -> ChangeResult {
//!         for plan in ["free", "pro"] {
//!             let item = HashMap::from([("pk".to_owned(), AttributeValue::S(plan.into()))]);
//!             ctx.put("plans", item)?; // sent on commit, with the audit entry
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Region and credentials from the standard AWS chain; an explicit
//! // endpoint for DynamoDB Local, moto or LocalStack.
//! let client = connect(Some("http://localhost:8000")).await;
//! let store = DynamoAuditStore::builder(client).prefix("myapp").build().await?;
//! let runner = Flamingock::builder()
//!     .audit_store(store.clone())
//!     .target(store.shared_target("app").build().await?) // commits with its audit entry
//!     .stage(Stage::new("init").change(SeedPlans))
//!     .build()?;
//! let report = runner.run().await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
//!
//! ## Data model
//!
//! One table, `<prefix>_audit` (key `pk` String + `sk` String, created on
//! demand by [`prepare`](flamingock_core::AuditStore::prepare) unless
//! [`auto_create(false)`](DynamoAuditStoreBuilder::auto_create)):
//!
//! * **current state**: `pk = CURRENT`, `sk = <change id>`. The snapshot is ONE
//!   paginated, strongly consistent `Query` on `pk = CURRENT`: its cost is the
//!   number of changes, never the length of the history.
//! * **history**: `pk = HISTORY#<change id>`, `sk = <created_at>#<uuid>`.
//! * **fence**: `pk = FENCE`, `sk = FENCE`, attribute `fence`, and the
//!   applied-set summary ([`flamingock_core::summary`]): `summary_rows`,
//!   `summary_applied`, `summary_digest` and `summary_seq`.
//! * **lock**: `pk = LOCK#<name>`, `sk = LOCK` ([`DynamoLock`]).
//!
//! An append reads the change's current-state item and the fence item (two
//! consistent `GetItem`s sent together), then sends ONE `TransactWriteItems`:
//! Put of the history item; when the entry supersedes the stored current
//! state (`created_at` later, or equal with a later state), Put of the
//! current-state item under the condition that it is still the item read;
//! and on the fence item an `Update` (with a current-state write: the
//! summary's new values, conditional on its `summary_seq` being the one read)
//! or a `ConditionCheck`, both with the fence check (`attribute_not_exists(fence)
//! OR fence <= :token`). A failed fence check is reported as
//! [`StoreError::Fenced`](flamingock_core::StoreError::Fenced) with the
//! recorded fence, and a fenced append leaves no trace; any other failed
//! condition means another writer moved the audit since the read, and the
//! append reads again. The lock serialises writers, so that costs one extra
//! read per write, never a retry in practice.
//!
//! The summary makes the start-up check with nothing pending one `GetItem`
//! of constant size ([`AuditStore::summary`](flamingock_core::AuditStore::summary)).
//! [`prepare`](flamingock_core::AuditStore::prepare) starts it at zero on a
//! table without current-state items; a table with entries and no summary
//! (an earlier version's) keeps none, and its writes count themselves in
//! `unsummarised_writes` so that a summary is never started over an entry it
//! did not see: such a table's start-up check reads the snapshot.
//!
//! `created_at` strings are fixed-width RFC 3339 with nanoseconds, so string
//! comparison in conditions and sort keys is time order.
//!
//! ## Clocks
//!
//! DynamoDB has no server clock usable in conditions, so the store keeps the
//! `created_at` the runner stamped (the audit suite runs with
//! `AuditCapabilities::client_clock()`): ties are broken by state rank
//! (DESIGN section 4). Consequence: the snapshot follows timestamps, not
//! write order, so hosts whose clocks disagree by more than the time between
//! two runs touching the same change could see an older outcome win; keep
//! runner hosts on NTP. The lock judges expiry by the caller's clock with a
//! skew margin; see [`DynamoLock`].
//!
//! The SDK gives every `TransactWriteItems` a client request token and reuses
//! it when it retries a request whose answer was lost, so DynamoDB applies a
//! retried transaction at most once (within its ten-minute idempotency window).
//!
//! ## Strategies
//!
//! * [`DynamoAuditStore::shared_target`]: shared transaction. The change's items,
//!   the APPLIED history item, the current-state item and the fence check go
//!   out in ONE `TransactWriteItems`. A fence rejection surfaces as
//!   `TargetError::Audit { source: StoreError::Fenced }`; a failed condition
//!   of the change's own items, or any other refusal, as
//!   `TargetError::NotCommitted` naming the item and its condition (the
//!   runner records FAILED + ROLLED_BACK); a timeout or lost connection after
//!   sending as `TargetError::Backend` (outcome unknown: the runner writes
//!   nothing, and since the audit entry rode in the same transaction the next
//!   run sees exactly what DynamoDB kept).
//! * [`DynamoTarget::builder`]: separate transaction with a marker item in
//!   `<prefix>_marker`, written in the change's own transaction.
//! * A change declared `.transactional(false)` gets a context without
//!   transaction ([`ContextMode::NonTransactional`](flamingock_core::ContextMode)):
//!   it uses [`DynamoContext::client`] directly (create a table, update TTL
//!   settings); pushing items then fails with [`ContextError::NonTransactional`].
//!
//! DynamoDB allows at most [`MAX_TRANSACTION_ITEMS`] (100) items per
//! transaction. The audit adds 3 (shared) or the marker 1 (separate); a change
//! whose total exceeds 100 fails before anything is sent, with a
//! `TargetError::NotCommitted` giving the count and the limit.
//!
//! ## Endpoints and TLS
//!
//! [`connect`] takes the standard AWS chain and an optional endpoint;
//! [`ConnectOptions`] adds the region and, for `https://` endpoints whose
//! certificate a private authority signed, that authority
//! ([`ConnectOptions::ca_certificate`], PEM; the system's roots are then not
//! used). A PEM without a readable certificate is refused before any request
//! ([`CaError`]). Refused handshakes are reported in [`RequestError`] with
//! what to do (unknown authority, a certificate for another host, a server
//! without TLS). Tested against moto with TLS on (`tests/tls.rs`: the audit,
//! lock and pipeline suites over HTTPS with a test CA).
//!
//! ## Throttling
//!
//! `ProvisionedThroughputExceededException`, `ThrottlingException`,
//! `RequestLimitExceeded`, `TransactionConflictException`, and transactions
//! cancelled only for `TransactionConflict`/throttling reasons are retried with
//! bounded exponential backoff ([`RetryPolicy`]). Items of the wrong shape are
//! reported as `StoreError::Malformed` (or `LockError::Malformed`) naming the
//! table and the key.
//!
//! ## Testing against moto
//!
//! The conformance suites run against moto's server (`moto[server]`). Where
//! moto departs from DynamoDB's documented behaviour this crate follows the
//! documentation; the differences seen are:
//!
//! * **Atomicity of conditional writes.** `moto_server` serves requests on
//!   several threads and evaluates a condition and applies the write without a
//!   lock, so two concurrent conditional writes can both succeed (two lock
//!   owners at once were observed). DynamoDB guarantees atomic conditional
//!   writes and transactions. The tests therefore run moto through the
//!   workspace's `scripts/moto_server_serial.py`, which serves moto's own app
//!   one request at a time (`bash scripts/test.sh` starts it).
//! * **Transaction conflicts and throttling** are never produced by moto
//!   (it serialises everything and has no capacity limits). The retry layer is
//!   covered by unit tests of the classifier and by a test that injects
//!   throttling answers into real requests with an SDK interceptor.
//! * **Type mismatches in conditions.** Comparing attributes of different
//!   types (e.g. a fence stored as a string against a numeric token) is simply
//!   false in DynamoDB, so the condition fails; moto cancels the transaction
//!   with a `TypeError` reason instead. Either way the write is refused and the
//!   error names the item (`pk=FENCE sk=FENCE`) and the condition.
//! * **Table creation** is immediate in moto (ACTIVE at once); against
//!   DynamoDB `prepare` waits for ACTIVE (up to two minutes).
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod connect;
mod error;
mod item;
mod lock;
mod retry;
mod store;
mod summary;
mod table;
mod target;
mod tx;

pub use connect::{connect, CaError, ConnectOptions};
pub use error::{ContextError, RequestError};
pub use lock::{DynamoLock, DynamoLockBuilder, DEFAULT_SKEW};
pub use retry::RetryPolicy;
pub use store::{DynamoAuditStore, DynamoAuditStoreBuilder, DEFAULT_PREFIX};
pub use target::{DynamoContext, DynamoTarget, DynamoTargetBuilder};
pub use tx::MAX_TRANSACTION_ITEMS;

/// Re-export of the SDK this crate is built on, so that changes can name its
/// types (`AttributeValue`, `TransactWriteItem`...) without a version mismatch.
pub use aws_sdk_dynamodb;
