//! # flamingock-mysql
//!
//! MySQL and MariaDB backend for [Flamingock](flamingock_core), on sqlx:
//!
//! * [`MysqlAuditStore`]: the audit history, a current-state table and the
//!   fence row (which also holds the applied-set summary,
//!   [`flamingock_core::summary`]), all written by **one transaction** per
//!   audit entry that locks the fence row first. A start with nothing
//!   pending reads that one row.
//! * [`MysqlLock`]: the fenced lease lock, one row, one short transaction
//!   per operation, expiry judged by the server's clock (`UTC_TIMESTAMP(6)`).
//! * [`MysqlTarget`]: where changes go, with [`MysqlContext`] (a connection
//!   inside the change's transaction) as their context. A target made by
//!   [`MysqlAuditStore::shared_target`] commits each change together with
//!   its APPLIED entry and the fence check.
//!
//! **DDL commits implicitly** in MySQL and MariaDB: declare DDL changes
//! `.transactional(false)`, one DDL statement per change. The target checks
//! every transactional change for an implicit commit and then records its
//! outcome under the non-transactional rules, with a warning; SQL files with
//! DDL run non-transactionally by themselves. See [`MysqlTarget`].
//!
//! ```no_run
//! use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, Stage};
//! use flamingock_mysql::{sqlx, MysqlAuditStore, MysqlContext, MysqlTarget};
//!
//! /// DDL: non-transactional, one statement.
//! struct CreateUsers;
//! impl Change for CreateUsers {
//!     type Target = MysqlTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("create-users").order("0001").author("ana").transactional(false)
//!     }
//!     async fn apply(&self, ctx: &mut MysqlContext) -> ChangeResult {
//!         sqlx::raw_sql("CREATE TABLE users (id BIGINT PRIMARY KEY, email VARCHAR(255) UNIQUE)")
//!             .execute(ctx.conn())
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! /// Data: transactional, committed with its audit entry.
//! struct SeedAdmin;
//! impl Change for SeedAdmin {
//!     type Target = MysqlTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("seed-admin").order("0002").author("ana")
//!     }
//!     async fn apply(&self, ctx: &mut MysqlContext) -> ChangeResult {
//!         sqlx::query("INSERT INTO users (id, email) VALUES (1, 'admin@example.com')")
//!             .execute(ctx.conn())
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MysqlAuditStore::connect("mysql://app@127.0.0.1:3306/app").await?;
//! let report = Flamingock::builder()
//!     .audit_store(store.clone()) // its lock is the default lock
//!     .target(store.shared_target("app-db").build().await?)
//!     .stage(Stage::new("schema").change(CreateUsers).change(SeedAdmin))
//!     .build()?
//!     .run()
//!     .await?;
//! println!("{report}");
//! # Ok(()) }
//! ```
//!
//! ## Tables
//!
//! In the configured database (default: the connection's), under the
//! configured prefix (default `flamingock`): `<prefix>_audit_history`,
//! `<prefix>_audit_current`, `<prefix>_fence`, `<prefix>_lock`, and, in a
//! separate target's database, `<prefix>_marker`; InnoDB, `utf8mb4` with a
//! binary collation (change ids compare byte for byte). `prepare` creates
//! them (one catalog query when they exist), or, with `auto_create(false)`,
//! fails naming the missing tables and the DDL to run
//! ([`MysqlAuditStore::ddl`]). An existing table of another shape is
//! reported as [`StoreError::Malformed`](flamingock_core::StoreError::Malformed)
//! naming it and its missing or mistyped columns.
//!
//! ## MySQL 8 and MariaDB
//!
//! Tested against MariaDB 10.11. What is relied on exists in both MySQL 8.0
//! and MariaDB 10.3+: InnoDB row locks (`SELECT ... FOR UPDATE`),
//! `UTC_TIMESTAMP(6)`, `LAST_INSERT_ID(expr)` (the fence claim, one atomic
//! statement), `INSERT IGNORE`, `REPLACE`, savepoints, `wait_timeout`.
//! JSON columns are `JSON` (MariaDB makes them `LONGTEXT` with a validity
//! check) and are read as text. No `GET_LOCK`: a named lock belongs to a
//! pooled connection, which may outlive the runner or die without it.
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod db_error;
mod lock;
mod names;
mod schema;
mod script;
mod space;
#[cfg(feature = "sql-files")]
mod sql_files;
mod store;
mod target;

pub use db_error::{describe_error, error_number};
pub use lock::{MysqlLock, MysqlLockBuilder};
pub use names::quote_ident;
pub use script::{implicit_commit, split_statements};
pub use store::{MysqlAuditStore, MysqlAuditStoreBuilder, DEFAULT_PREFIX};
pub use target::{
    MysqlContext, MysqlTarget, MysqlTargetBuilder, ScriptError, DEFAULT_IDLE_TIMEOUT,
};

/// Re-exported: the driver this crate is built on.
pub use sqlx;
