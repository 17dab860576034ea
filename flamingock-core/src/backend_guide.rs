//! # Implementing a backend
//!
//! A backend is three primitives the runner drives: an [`AuditStore`], a
//! [`LockProvider`] and a [`TargetSystem`]. The algorithm (planning,
//! deciding, locking, waiting, fencing, recording) is this crate's; a
//! backend only answers each call exactly. The conformance suites in
//! `flamingock-test-support` are the definition of "exactly": a backend is
//! done when `audit_store_tests!`, `lock_tests!`, `pipeline_tests!`,
//! `bad_input_tests!` and `process_tests!` pass against a real server, with
//! every check that does
//! not apply listed under `ignored:` with its reason (it then shows as
//! ignored, never as passed).
//!
//! Follow the builder convention of the other backends (see the README's
//! "Backends"): `X::builder(handle)`, setters named after what they set,
//! `build().await?` that never writes and refuses a wrong configuration
//! (an invalid prefix or schema, no database) with
//! [`StoreError::InvalidConfig`] / [`LockError::InvalidConfig`], `connect(url)` on the store,
//! `store.lock()` and `store.shared_target(id)`, `prefix(..)` for every name
//! the backend makes.
//!
//! ## The audit store
//!
//! | method | must | checked by |
//! |---|---|---|
//! | [`describe`](AuditStore::describe) | name the database and tables, never a password (a refused login names the user) | `wrong_credentials_are_clear_and_hide_the_password` |
//! | [`store_id`](AuditStore::store_id) | be equal for two handles on the same tables, different otherwise; a target reporting this id in [`TargetCapabilities::shared_audit_store`] gets the shared-transaction strategy | `crash_table_shared_tx` |
//! | [`prepare`](AuditStore::prepare) | create what is missing when allowed, or fail with [`StoreError::NotReady`] naming it (and the DDL) and creating nothing; a table of another shape is [`StoreError::Malformed`] naming its columns, and reads refuse it too; safe to run concurrently | `empty_store_and_idempotent_prepare`, `missing_tables_are_not_ready_without_auto_create`, `misshapen_tables_are_reported_not_used` |
//! | [`claim_fence`](AuditStore::claim_fence) | atomically increment the fence and return it (1 on an empty store); only a runner that just took the lock calls it | `fence_claim_and_reject` |
//! | [`fence`](AuditStore::fence) | read it; 0 when nothing exists; never create anything | `reading_creates_nothing` |
//! | [`append`](AuditStore::append) | in one atomic write: reject with [`StoreError::Fenced`] when `entry.fencing_token` is below the fence, else add the history entry and move the change's current state (and the summary, if kept); `created_at` strictly increasing per store | `append_and_snapshot`, `fence_claim_and_reject`, `concurrent_appends` |
//! | [`snapshot`](AuditStore::snapshot) / [`history`](AuditStore::history) | equal the reduction of the history at every instant; a row the backend cannot read is [`StoreError::Malformed`] naming the table and key, never a panic or a silent skip | `snapshot_ordering_and_ties`, `history_filters`, `large_and_odd_values_roundtrip`, `malformed_entries_are_named_not_misread` |
//! | [`summary`](AuditStore::summary) | `None`, or kept in the same atomic write as the current state, equal to [`AuditSummary::of_snapshot`](crate::summary::AuditSummary::of_snapshot) | `summary_matches_snapshot` |
//!
//! An error of a write whose outcome the backend cannot know (the
//! connection dropped after sending) is [`StoreError::Backend`]: the runner
//! stops and the next run reads what the store kept. Only return
//! [`StoreError::Fenced`] when the store is certain it wrote nothing.
//!
//! ## The lock
//!
//! Each [`LockProvider`] method is one attempt; waiting, backoff, deadlines,
//! the refresh loop and events are the runner's.
//!
//! | method | must | checked by |
//! |---|---|---|
//! | [`try_acquire`](LockProvider::try_acquire) | grant when free, expired or already the owner's, with a token greater than every token ever granted (also after releases, expiries and force releases: the counter is never reset); otherwise return [`Acquire::Held`] with the holder | `acquire_inspect_release`, `held_lock_names_holder`, `mutual_exclusion`, `reacquire_by_owner`, `tokens_strictly_increase` |
//! | [`extend`](LockProvider::extend) | only when owner **and** token match and the lease has not run out, else [`LockError::Lost`] | `extend_only_by_owner`, `expiry_and_takeover` |
//! | [`release`](LockProvider::release) | only when owner and token match; keep the token counter | `release_only_by_owner` |
//! | [`inspect`](LockProvider::inspect) / [`force_release`](LockProvider::force_release) | never create the lock's table; force release keeps the counter | `force_release`, `reading_creates_nothing` |
//!
//! Judge expiry by one clock every process shares (the server's), or
//! document the skew margin you rely on. Safety does not rest on the lock:
//! the fence in [`AuditStore::append`] rejects a stale holder's writes.
//!
//! ## The target
//!
//! [`TargetSystem`] documents each method's errors; the ones that decide
//! what the runner records are [`commit`](TargetSystem::commit)'s:
//! `Ok` (committed), [`TargetError::NotCommitted`] (certainly not
//! committed: recorded FAILED then ROLLED_BACK), [`TargetError::Audit`]
//! wrapping [`StoreError::Fenced`] (the fence check in the shared
//! transaction refused: rolled back, the runner stops), and anything else
//! (outcome unknown: nothing more is recorded).
//!
//! * **Shared transaction.** When the target is the audit store's own
//!   database, implement [`AppendInTransaction`] on the store: its
//!   `Transaction` is what the target holds while a change runs (a SQL
//!   connection inside `BEGIN`, a MongoDB session, DynamoDB's batch), and
//!   `append_in_transaction` writes the entry **inside the change's
//!   transaction** with the same fence check as `append`, so that a crash at
//!   any instant leaves both or neither. The store's `shared_target(id)`
//!   builds the target with a [`SharedAudit`] of the store (the pairing is by
//!   type: the target's field only holds that store); the target's
//!   capabilities are [`SharedAudit::capabilities`], and on
//!   [`CommitWith::Audit`] its `commit` calls [`SharedAudit::append`] with
//!   its open transaction, rolls back on an error and returns it unchanged
//!   (the mapping to [`TargetError::Audit`] / [`TargetError::NotCommitted`]
//!   is core's), then commits. The pipeline suite's crash table
//!   (`crash_table_shared_tx`) kills the runner at every point of this;
//!   the bad-input suite's `fenced_shared_commit_rolls_the_change_back`
//!   checks the contract directly: a stale token is refused inside the
//!   transaction and the change's effect goes with it.
//! * **Separate transaction with marker.** On [`CommitWith::Marker`] write
//!   the marker inside the change's transaction; [`marker`](TargetSystem::marker)
//!   reads it back; `clear_marker` removes it (`crash_table_separate_tx_with_marker`).
//! * **Transactions that outlive their runner.** If the database keeps a
//!   killed runner's transaction open (and its row locks), clear it in
//!   [`on_claimed`](TargetSystem::on_claimed) or bound it (PostgreSQL:
//!   `idle_in_transaction_session_timeout` no longer than the lease;
//!   MongoDB: `killSessions`), so the next runner is not blocked by it
//!   (`lost_lease_cannot_commit`, the process suite's pause cases).
//! * **A busy target** (another writer holds it, as a SQLite file's write
//!   lock): return [`TargetError::Busy`] from `begin` and the runner waits,
//!   reporting it, up to the lock's acquire timeout.
//!
//! ## Wiring the suites
//!
//! ```text
//! mod audit { flamingock_test_support::audit_store_tests!(my_backend); }
//! mod lock { flamingock_test_support::lock_tests!(my_backend); }
//! mod pipeline {
//!     flamingock_test_support::pipeline_tests!(my_backend,
//!         run: [applies_in_order_then_fast_path, /* ... */],
//!         ignored: [crash_table_shared_tx = "why it does not apply"],
//!     );
//! }
//! mod bad_input {
//!     flamingock_test_support::bad_input_tests!(my_backend,
//!         run: [malformed_entries_are_named_not_misread, /* ... */],
//!         ignored: [wrong_credentials_are_clear_and_hide_the_password = "no credentials"],
//!     );
//! }
//! mod process { flamingock_test_support::process_tests!(my_backend); }
//! ```
//!
//! The bad-input suite needs a few hooks only the backend can give
//! (`BadInputUnderTest`: corrupt a stored state, open with auto-create off,
//! put a table of another shape in place, kill the server connections,
//! connect as an unknown user). A backend's setup that other crates pair
//! with (PostgreSQL's, used by the Redis lock's tests) is exported by
//! `flamingock-test-support` behind a feature of the backend's name.
//!
//! `my_backend` is an async function returning the backend's implementation
//! of the suites' `*UnderTest` traits, or panicking with what to start when
//! its server is missing (`require_service`): a missing server fails the
//! run, it never passes silently. Every test works in a fresh namespace
//! (`namespace("...")`) and removes it afterwards.

#[allow(unused_imports)] // for the links above
use crate::{
    Acquire, AppendInTransaction, AuditStore, CommitWith, LockError, LockProvider, SharedAudit,
    StoreError, TargetCapabilities, TargetError, TargetSystem,
};
