//! # flamingock-sqlite
//!
//! The embedded default backend of Flamingock: the audit store, the fenced
//! lock and a transactional target in one SQLite file, with no server to run
//! (sqlx, bundled libsqlite3).
//!
//! * [`SqliteAuditStore`]: history, current state per change and the fence
//!   in tables `flamingock_audit`, `flamingock_audit_current` and
//!   `flamingock_fence`. WAL journal mode, a 30 s busy timeout and foreign
//!   keys on. Every write transaction starts with `BEGIN IMMEDIATE`, so
//!   writers in several processes queue for the file's write lock instead of
//!   failing. The fence row also holds the applied-set summary
//!   ([`flamingock_core::summary`]), moved in the transaction of every
//!   append, so a start with nothing pending reads one row.
//! * [`SqliteLock`]: the lease lock in table `flamingock_lock` of the same
//!   file (the store's [`default_lock`](flamingock_core::AuditStore::default_lock)).
//! * [`SqliteTarget`]: changes receive a [`SqliteContext`], a connection
//!   inside a transaction. A target from [`SqliteAuditStore::shared_target`]
//!   shares the store's database, so each change commits together with its
//!   APPLIED entry (no crash ever needs an operator); [`SqliteTarget::builder`]
//!   works on another database with a marker table.
//!
//! ```
//! use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, Stage};
//! use flamingock_sqlite::{sqlx, SqliteAuditStore, SqliteContext, SqliteTarget};
//!
//! struct CreateUsers;
//! impl Change for CreateUsers {
//!     type Target = SqliteTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("create-users").order("0001").author("ana")
//!     }
//!     async fn apply(&self, db: &mut SqliteContext) -> ChangeResult {
//!         sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL)")
//!             .execute(db.conn())
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A file path in real use: SqliteAuditStore::connect("app.db").
//! let store = SqliteAuditStore::connect("sqlite::memory:").await?;
//! let runner = Flamingock::builder()
//!     .audit_store(store.clone())
//!     .target(store.shared_target("app-db").build().await?) // same database
//!     .stage(Stage::new("schema").change(CreateUsers))
//!     .build()?;
//! let report = runner.run().await?;
//! assert_eq!(report.applied(), ["create-users"]);
//! assert!(!runner.run().await?.took_lock); // nothing pending: the fast path
//! # Ok(())
//! # }
//! ```
//!
//! ## Notes
//!
//! * `:memory:` (or `sqlite::memory:`)
//!   works for tests: the pool then has exactly one connection, because
//!   every SQLite connection to `:memory:` is its own database. With one
//!   connection, whatever holds it makes everything else wait: a
//!   non-transactional change on the store's own in-memory database that
//!   fails keeps it while the runner records the failure, which then waits
//!   for the pool's acquire timeout. Use a file for anything but tests.
//! * SQLite has one writer per file. A change in the shared-transaction
//!   strategy holds the file's write lock until it commits: other runners
//!   still read (WAL), and their lock attempts report the lock as held once
//!   their busy timeout runs out, so they keep waiting as for any held lock.
//!   The holder's background lease refresh waits for the commit too; nobody
//!   else can write meanwhile, so nobody can take the lease over, but keep
//!   single changes well under the lease (60 s by default) so the next
//!   change still finds a valid lease.
//! * `created_at` is the store's clock: the process clock at microsecond
//!   precision, strictly increasing within the process and after the last
//!   history row of the file. Lock expiry uses the process clock too
//!   (unix milliseconds); processes sharing a file share a machine's clock.
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod connect;
mod history;
mod lock;
mod schema;
mod source;
#[cfg(feature = "sql-files")]
mod sql_files;
mod store;
mod target;

pub use history::read_history;
pub use lock::{SqliteLock, SqliteLockBuilder};
pub use source::SqliteSource;
pub use store::{SqliteAuditStore, SqliteAuditStoreBuilder, DEFAULT_PREFIX};
pub use target::{SqliteContext, SqliteTarget, SqliteTargetBuilder};

/// The sqlx version this crate is built with, for writing changes.
pub use sqlx;
