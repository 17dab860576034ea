//! # flamingock-redis-target
//!
//! A Redis [target system](flamingock_core::TargetSystem) for
//! [Flamingock](flamingock_core): configuration values and feature flags as
//! changes, on the machine's `redis` client.
//!
//! A transactional change's writes are **queued** and sent at commit as one
//! `MULTI ... EXEC` together with a marker key (`<prefix>:marker:<change id>`),
//! so they land all together or not at all, and a crash between that commit
//! and the APPLIED entry is resolved by the next run from the marker
//! (separate transaction with marker). Reads in a transactional change see
//! the state before the change (Redis runs nothing of a `MULTI` before
//! `EXEC`). A change declared `.transactional(false)` writes key by key as it
//! goes; give it an [`is_applied`](flamingock_core::Change::is_applied) check
//! ([`RedisContext::get`], [`RedisContext::hget`]) and a crash half-way is
//! settled by the next run.
//!
//! ```no_run
//! use flamingock_core::{Change, ChangeMeta, ChangeResult};
//! use flamingock_redis_target::{RedisContext, RedisTarget};
//!
//! struct EnableNewCheckout;
//! impl Change for EnableNewCheckout {
//!     type Target = RedisTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("enable-new-checkout").order("0007").author("ana")
//!     }
//!     async fn apply(&self, redis: &mut RedisContext) -> ChangeResult {
//!         redis.hset("flags", "new-checkout", "on");
//!         redis.set("config:checkout:max-items", "50");
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let flags = RedisTarget::builder("flags", "redis://127.0.0.1:6379/").build().await?;
//! # let _ = flags; Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod context;
mod target;

pub use context::RedisContext;
pub use target::{RedisTarget, RedisTargetBuilder, DEFAULT_PREFIX};

/// Re-exported: the client this crate is built on.
pub use redis;
