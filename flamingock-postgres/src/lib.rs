//! # flamingock-postgres
//!
//! PostgreSQL backend for [Flamingock](flamingock_core), on sqlx:
//!
//! * [`PostgresAuditStore`]: the audit history, a current-state table kept
//!   in the same statement (so the start-up check reads one row per change,
//!   however long the history), and the fence — all written by **one
//!   statement** per audit entry.
//! * [`PostgresLock`]: the fenced lease lock, one row, one statement per
//!   operation, expiry judged by the server's clock.
//! * [`PostgresTarget`]: where changes go, with [`PgContext`] (a connection
//!   inside the change's transaction) as their context. A target made by
//!   [`PostgresAuditStore::target`] commits each change **together with its
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
//!         ChangeMeta::new("create-users", "0001").author("ana")
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
//!     .target(store.target("app-db")) // shared transactions with the audit
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
//! `<prefix>_fence`, `<prefix>_lock`, and, in a separate target's schema,
//! `<prefix>_marker`. `prepare` creates them (one catalog query when they
//! exist; the creation itself is serialised between concurrent runners by a
//! transaction-scoped advisory lock), or, with `auto_create(false)`, fails
//! naming the missing tables and the DDL to run ([`PostgresAuditStore::ddl`]).
//! An existing table of another shape is reported as
//! [`StoreError::Malformed`](flamingock_core::StoreError::Malformed) naming it
//! and its missing or mistyped columns.
//!
//! ## Connection poolers and pools
//!
//! Nothing here uses session state (no session advisory locks, no `SET`,
//! no `LISTEN`), so the store, the lock and the targets work behind PgBouncer
//! in transaction pooling mode. sqlx caches prepared statements per
//! connection; with PgBouncer older than 1.21 (or `max_prepared_statements = 0`)
//! set `statement_cache_capacity(0)` on the connect options.
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
mod lock;
mod names;
mod schema;
mod script;
mod space;
mod store;
mod target;

pub use db_error::{describe_error, sqlstate};
pub use lock::{PostgresLock, PostgresLockBuilder};
pub use names::quote_ident;
pub use script::split_statements;
pub use store::{PostgresAuditStore, PostgresAuditStoreBuilder, DEFAULT_PREFIX, DEFAULT_SCHEMA};
pub use target::{PgContext, PostgresTarget, ScriptError, DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT};

/// Re-exported: the driver this crate is built on.
pub use sqlx;
