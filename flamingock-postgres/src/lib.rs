//! # flamingock-postgres
//!
//! PostgreSQL backend for [Flamingock](flamingock_core), on sqlx:
//!
//! * [`PostgresAuditStore`]: the audit history, a current-state table kept
//!   in the same statement, and the fence row, which also holds the
//!   applied-set summary ([`flamingock_core::summary`]) — all written by
//!   **one statement** per audit entry. A start with nothing pending reads
//!   that one row (one round trip of constant size, however many changes and
//!   however long the history), on one connection; building the handle does
//!   no I/O.
//! * [`PostgresLock`]: the fenced lease lock, one row, one statement per
//!   operation, expiry judged by the server's clock.
//! * [`PostgresTarget`]: where changes go, with [`PgContext`] (a connection
//!   inside the change's transaction) as their context. A target made by
//!   [`PostgresAuditStore::shared_target`] commits each change **together with its
//!   APPLIED entry and the fence check**: a crash at any instant leaves both
//!   or neither, and a runner that lost its lease can never commit.
//!
//! ```no_run
//! use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, Stage};
//! use flamingock_postgres::{sqlx, PgContext, PostgresAuditStore, PostgresTarget};
//!
//! struct CreateUsers;
//! impl Change for CreateUsers {
//!     type Target = PostgresTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("create-users").order("0001").author("ana")
//!     }
//!     async fn apply(&self, ctx: &mut PgContext) -> ChangeResult {
//!         sqlx::query("CREATE TABLE users (id bigint PRIMARY KEY, email text UNIQUE)")
//!             .execute(ctx.conn())
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresAuditStore::connect("postgres://app@127.0.0.1/app").await?;
//! let report = Flamingock::builder()
//!     .audit_store(store.clone()) // its lock is the default lock
//!     .target(store.shared_target("app-db").build().await?) // commits with its audit entry
//!     .stage(Stage::new("schema").change(CreateUsers))
//!     .build()?
//!     .run()
//!     .await?;
//! println!("{report}");
//! # Ok(()) }
//! ```
//!
//! ## Tables
//!
//! In the configured schema (default `public`), under the configured prefix
//! (default `flamingock`): `<prefix>_audit_history`, `<prefix>_audit_current`,
//! `<prefix>_fence`, `<prefix>_lock`, and, in a separate target's schema
//! (default: the connection's current schema), `<prefix>_marker`. The fence row's `summary_rows`, `summary_applied` and
//! `summary_digest` and the current rows' `applied_term` / `prev_term` keep
//! the summary: each append locks the fence row, and its upsert of the
//! current row returns what the row held before, so the summary moves by
//! exactly that difference in the same statement (NULL in the fence row
//! means "unknown": the runner then reads the snapshot). Tables made by an
//! earlier version lack these columns and are reported by `prepare` as of
//! another shape. `prepare` creates them (one catalog query when they
//! exist; the creation itself is serialised between concurrent runners by a
//! transaction-scoped advisory lock), or, with `auto_create(false)`, fails
//! naming the missing tables and the DDL to run ([`PostgresAuditStore::ddl`]).
//! An existing table of another shape is reported as
//! [`StoreError::Malformed`](flamingock_core::StoreError::Malformed) naming it
//! and its missing or mistyped columns.
//!
//! ## Connection poolers and pools
//!
//! Nothing here relies on session state: no session advisory locks, no
//! `SET` outside a transaction (settings are `SET LOCAL`), no temporary
//! tables, no `LISTEN`. Behind PgBouncer in **session** mode nothing needs
//! declaring; only sqlx's `extra_float_digits` startup option, which a stock
//! PgBouncer refuses, must be left out of your connect options
//! (`.extra_float_digits(None)`; [`PostgresAuditStore::connect`] does it).
//!
//! In **transaction** mode (`pool_mode = transaction`, the front of most
//! hosted PostgreSQL) each transaction may get another server connection, so
//! a statement prepared outside one may be executed on another connection,
//! or collide with another client's of the same name (`prepared statement
//! "sqlx_s_1" already exists`). Declare it with
//! [`transaction_pooler(true)`](PostgresAuditStoreBuilder::transaction_pooler)
//! on the store (its lock and [`PostgresAuditStore::shared_target`]s follow), on a
//! standalone [`PostgresLockBuilder`] and on separate targets ([`PostgresTargetBuilder`]), or
//! with `?pooler=transaction` in the URL given to
//! [`PostgresAuditStore::connect`]. Then statements are unnamed, every store
//! and lock operation runs inside a transaction of its own (two more round
//! trips each), and each change's transaction starts with `DEALLOCATE ALL`
//! so the named statements other clients left on the server connection
//! cannot collide with the change's own; give your pool
//! `statement_cache_capacity(0)`, since a cached statement would be looked up
//! on whatever connection the next transaction gets. An undeclared pooler is
//! named in the error with what to declare. Both modes are tested with the
//! audit, lock and pipeline suites (16 concurrent runners) through PgBouncer
//! 1.18 (`tests/pgbouncer.rs`).
//!
//! sqlx pools ping each idle connection before handing it out
//! (`test_before_acquire`, on by default): one extra round trip per use.
//! Turning it off is safe with this crate: idempotent statements (reads,
//! fence claims, lock operations, `BEGIN`) are retried once on a fresh
//! connection when the pooled one turns out dead; audit appends are not
//! (their outcome would be unknown), and surface the error instead.
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod db_error;
mod history;
mod lock;
mod names;
mod pooler;
mod schema;
mod script;
mod space;
#[cfg(feature = "sql-files")]
mod sql_files;
mod store;
mod target;
mod tls;

pub use db_error::{describe_error, sqlstate};
pub use history::read_history;
pub use lock::{PostgresLock, PostgresLockBuilder};
pub use names::quote_ident;
pub use script::split_statements;
pub use store::{PostgresAuditStore, PostgresAuditStoreBuilder, DEFAULT_PREFIX, DEFAULT_SCHEMA};
pub use target::{
    PgContext, PostgresTarget, PostgresTargetBuilder, ScriptError,
    DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
};
pub use tls::install_tls_provider;

/// Re-exported: the driver this crate is built on.
pub use sqlx;
