//! # flamingock
//!
//! Change-as-Code for Rust: an application declares ordered, versioned
//! changes to the systems it depends on (SQL schemas and data, MongoDB,
//! DynamoDB, ...), and at start-up the runner applies each pending change
//! exactly once, in order, records it in an audit store and serialises
//! concurrent runners with a fenced distributed lock. When it cannot
//! guarantee a safe outcome it stops and says what to resolve.
//!
//! This is the crate to add; backends are features:
//!
//! | feature | what |
//! |---|---|
//! | `sqlite` (default) | `sqlite`: audit store, lock and target in one SQLite file |
//! | `postgres` | `postgres`: PostgreSQL audit store, lock and target |
//! | `mysql` | `mysql`: MySQL and MariaDB audit store, lock and target (DDL commits implicitly there: see its docs) |
//! | `mongodb` | `mongodb`: MongoDB audit store, lock and target |
//! | `dynamodb` | `dynamodb`: DynamoDB audit store, lock and target |
//! | `redis-lock` | `redis_lock`: a fenced lock on Redis |
//! | `rabbitmq` | `rabbitmq`: a RabbitMQ target (exchanges, queues, bindings) |
//! | `nats` | `nats`: a NATS JetStream target (streams, consumers) |
//! | `kafka` | `kafka`: a Kafka target (topics, through the admin API; pure Rust) |
//! | `aws` | `aws`: S3 and SQS targets |
//! | `http` | `http`: an HTTP API target (put-if-changed, compare-and-set) |
//! | `redis-target` | `redis_target`: configuration and feature flags on Redis |
//! | `tls` (default) | TLS for PostgreSQL (`sslmode=require`, `verify-full`) and Redis (`rediss://`) |
//! | `macros` (default) | `change`: `#[flamingock::change]` on an async function |
//! | `sql-files` | `sql`, `embed_sql_dir!`, `SqlChanges`: directories of SQL files as changes |
//! | `cli` | `cli`: the operator commands, embeddable in the application's parser |
//! | `testing` | `fault` and `FlamingockBuilder::fault_injector`: crash tests of your own (never in an application) |
//! | `testcontainers` | `test_support`: backends' services in containers for tests |
//!
//! ```
//! # #[cfg(all(feature = "sqlite", feature = "macros"))]
//! # mod quickstart {
//! use flamingock::prelude::*;
//! use flamingock::sqlite::{sqlx, SqliteAuditStore, SqliteContext};
//!
//! #[flamingock::change(id = "create-products", order = "0001", author = "ana")]
//! async fn create_products(db: &mut SqliteContext) -> ChangeResult {
//!     sqlx::query("CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
//!         .execute(db.conn())
//!         .await?;
//!     Ok(())
//! }
//!
//! #[flamingock::change(id = "seed-products", order = "0002", author = "ana")]
//! async fn seed_products(db: &mut SqliteContext) -> ChangeResult {
//!     sqlx::query("INSERT INTO products (name) VALUES ('tea'), ('cake')")
//!         .execute(db.conn())
//!         .await?;
//!     Ok(())
//! }
//!
//! pub async fn migrate(file: &str) -> Result<(), flamingock::Error> {
//!     let store = SqliteAuditStore::connect(file).await?;
//!     Flamingock::builder()
//!         .audit_store(store.clone())
//!         .target(store.shared_target("app-db").build().await?)
//!         .stage(Stage::new("schema").change(create_products).change(seed_products))
//!         .build()?
//!         .run()
//!         .await?;
//!     Ok(())
//! }
//! # }
//! ```
//!
//! `flamingock-core` plus one backend crate works the same for those who
//! prefer it (`#[change(crate = flamingock_core, ...)]` then).
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub use flamingock_core::*;

/// `#[flamingock::change(id = "...", order = "...")]` on an async function
/// taking its context (`&mut PgContext`, `&mut SqliteContext`, ...): the
/// function becomes a unit struct of the same name implementing [`Change`],
/// to add to a [`Stage`] by name. See the crate docs for an example.
#[cfg(feature = "macros")]
pub use flamingock_macros::change;

/// SQLite: audit store, fenced lock and transactional target
/// (`flamingock-sqlite`).
#[cfg(feature = "sqlite")]
pub use flamingock_sqlite as sqlite;

/// PostgreSQL: audit store, fenced lock and transactional target
/// (`flamingock-postgres`).
#[cfg(feature = "postgres")]
pub use flamingock_postgres as postgres;

/// MySQL and MariaDB: audit store, fenced lock and transactional target
/// (`flamingock-mysql`).
#[cfg(feature = "mysql")]
pub use flamingock_mysql as mysql;

/// MongoDB: audit store, fenced lock and transactional target
/// (`flamingock-mongodb`).
#[cfg(feature = "mongodb")]
pub use flamingock_mongodb as mongodb;

/// DynamoDB: audit store, fenced lock and transactional target
/// (`flamingock-dynamodb`).
#[cfg(feature = "dynamodb")]
pub use flamingock_dynamodb as dynamodb;

/// A fenced lock on Redis (`flamingock-redis-lock`).
#[cfg(feature = "redis-lock")]
pub use flamingock_redis_lock as redis_lock;

/// A RabbitMQ target (`flamingock-rabbitmq`).
#[cfg(feature = "rabbitmq")]
pub use flamingock_rabbitmq as rabbitmq;

/// A NATS JetStream target (`flamingock-nats`).
#[cfg(feature = "nats")]
pub use flamingock_nats as nats;

/// A Kafka target (`flamingock-kafka`).
#[cfg(feature = "kafka")]
pub use flamingock_kafka as kafka;

/// S3 and SQS targets (`flamingock-aws`).
#[cfg(feature = "aws")]
pub use flamingock_aws as aws;

/// An HTTP API target (`flamingock-http`).
#[cfg(feature = "http")]
pub use flamingock_http as http;

/// Configuration and feature flags on Redis (`flamingock-redis-target`).
#[cfg(feature = "redis-target")]
pub use flamingock_redis_target as redis_target;

/// The operator commands, embeddable in the application's own parser
/// (`flamingock-cli`).
#[cfg(feature = "cli")]
pub use flamingock_cli as cli;

/// Directories of SQL files as changes (`flamingock-sql`).
#[cfg(feature = "sql-files")]
pub use flamingock_sql as sql;

#[cfg(feature = "sql-files")]
pub use flamingock_sql::SqlChanges;

#[cfg(feature = "sql-files")]
/// Embeds a directory of SQL change files (relative to the crate's
/// `Cargo.toml`) at compile time, read by the same loader as
/// `flamingock apply --changes DIR` (`flamingock_sql::SqlChanges::from_dir_entries`)
/// in the layout its names show (this project's, sqlx, diesel, Flyway or
/// refinery) or the one given (`embed_sql_dir!("migrations", Layout::Refinery)`).
/// A malformed name, a duplicate id or order, an empty file or a bad header
/// is a compile error with the loader's message. Evaluates to
/// `Result<SqlChanges, LoadErrors>`.
///
/// Editing a file rebuilds the crate (the contents are `include_str!`s);
/// adding or removing one needs `println!("cargo:rerun-if-changed=DIR")` in
/// the crate's `build.rs`. A debug build whose directory is still where it
/// was built from compares it at start-up and warns, naming the files, when
/// it no longer matches what was embedded, so a stale build is not mistaken
/// for a store problem.
///
/// ```text
/// let changes = flamingock::embed_sql_dir!("migrations")?;
/// ```
#[macro_export]
macro_rules! embed_sql_dir {
    ($dir:literal) => {
        $crate::__private::embed_sql_dir_impl!($crate::sql, $dir, Auto)
    };
    ($dir:literal, $layout:ident) => {
        $crate::__private::embed_sql_dir_impl!($crate::sql, $dir, $layout)
    };
    ($dir:literal, $a:ident :: $layout:ident) => {
        $crate::__private::embed_sql_dir_impl!($crate::sql, $dir, $layout)
    };
    ($dir:literal, $a:ident :: $b:ident :: $layout:ident) => {
        $crate::__private::embed_sql_dir_impl!($crate::sql, $dir, $layout)
    };
    ($dir:literal, $a:ident :: $b:ident :: $c:ident :: $layout:ident) => {
        $crate::__private::embed_sql_dir_impl!($crate::sql, $dir, $layout)
    };
}

#[cfg(feature = "sql-files")]
#[doc(hidden)]
pub mod __private {
    pub use flamingock_macros::embed_sql_dir_impl;
}

/// Test helpers (`flamingock-test-support`).
#[cfg(feature = "testcontainers")]
pub use flamingock_test_support as test_support;

/// What most programs use: the runner, stages, changes.
pub mod prelude {
    #[cfg(feature = "macros")]
    pub use crate::change;
    pub use flamingock_core::{
        Change, ChangeContext, ChangeMeta, ChangeResult, Flamingock, RecoveryStrategy, Stage,
        TargetSystem,
    };
}

/// What `#[flamingock::change]` refuses at compile time (each block must
/// fail to compile):
///
/// An empty id:
/// ```compile_fail
/// use flamingock::{memory::KvTx, ChangeResult};
/// #[flamingock::change(id = "", order = "0001")]
/// async fn nothing(tx: &mut KvTx) -> ChangeResult { Ok(()) }
/// ```
///
/// No order:
/// ```compile_fail
/// use flamingock::{memory::KvTx, ChangeResult};
/// #[flamingock::change(id = "a")]
/// async fn nothing(tx: &mut KvTx) -> ChangeResult { Ok(()) }
/// ```
///
/// A function that is not `async`:
/// ```compile_fail
/// use flamingock::{memory::KvTx, ChangeResult};
/// #[flamingock::change(id = "a", order = "0001")]
/// fn nothing(tx: &mut KvTx) -> ChangeResult { Ok(()) }
/// ```
///
/// A context that is not `&mut`:
/// ```compile_fail
/// use flamingock::{memory::KvTx, ChangeResult};
/// #[flamingock::change(id = "a", order = "0001")]
/// async fn nothing(tx: &KvTx) -> ChangeResult { Ok(()) }
/// ```
///
/// A rollback whose context is another target's:
/// ```compile_fail
/// use flamingock::{memory::KvTx, ChangeResult};
/// async fn undo(db: &mut flamingock::sqlite::SqliteContext) -> ChangeResult { Ok(()) }
/// #[flamingock::change(id = "a", order = "0001", rollback = undo)]
/// async fn nothing(tx: &mut KvTx) -> ChangeResult { Ok(()) }
/// ```
///
/// An unknown recovery:
/// ```compile_fail
/// use flamingock::{memory::KvTx, ChangeResult};
/// #[flamingock::change(id = "a", order = "0001", recovery = "sometimes")]
/// async fn nothing(tx: &mut KvTx) -> ChangeResult { Ok(()) }
/// ```
#[cfg(feature = "macros")]
#[doc(hidden)]
pub mod compile_errors {}
