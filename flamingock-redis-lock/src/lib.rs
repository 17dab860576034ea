//! # flamingock-redis-lock
//!
//! A [`LockProvider`](flamingock_core::LockProvider) on Redis, for teams that
//! want Flamingock's distributed lock outside their audit store (for
//! example: many services, one Redis they already run, audit stores in each
//! service's own database).
//!
//! ```no_run
//! use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
//! use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, Stage};
//! use flamingock_redis_lock::RedisLock;
//!
//! struct SeedCountries;
//! impl Change for SeedCountries {
//!     type Target = InMemoryTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("seed-countries").order("0001").author("ops")
//!     }
//!     async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
//!         tx.put("countries:es", "Spain");
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // The audit store can be any other backend (PostgreSQL, MongoDB,
//! // DynamoDB...); the in-memory one keeps this example self-contained.
//! let store = InMemoryAuditStore::new();
//! // Keys {flamingock:billing}:lock and {flamingock:billing}:token: one
//! // named lock per group of runners that must not overlap.
//! let lock = RedisLock::builder("redis://127.0.0.1:6379/")
//!     .name("billing")
//!     .build()
//!     .await?;
//!
//! let runner = Flamingock::builder()
//!     .audit_store(store.clone())
//!     .lock_provider(lock) // instead of the audit store's own lock
//!     .target(store.shared_target("app-db"))
//!     .stage(Stage::new("init").change(SeedCountries))
//!     .build()?;
//! let report = runner.run().await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
//!
//! ## Correctness does not rest on Redis
//!
//! A Redis lease is not, on its own, enough to make changes run exactly once:
//!
//! * **Failover can lose a lock.** Redis replication is asynchronous: a lock
//!   written on a primary that fails before replicating it is gone on the
//!   promoted replica, and a second runner can take it while the first still
//!   believes it holds it. (Redlock-style multi-node quorums narrow this
//!   window but do not close it, and they rely on bounded clock drift.)
//! * **A paused process can outlive its lease.** A garbage-collection pause,
//!   a stopped container, a slow network or a swapped-out VM can stop a
//!   runner for longer than its lease; Redis expires the key, another runner
//!   takes over, and the first one wakes up mid-change believing it is
//!   still the owner. No check the runner makes beforehand can rule this
//!   out: the pause can fall between the check and the write.
//!
//! So safety does not rest on this lock at all (DESIGN section 6). The lock
//! hands out a token with every grant, from a counter key that has no expiry
//! and only grows (`INCR`), but that token only identifies the lease for
//! extend and release. Right after acquiring, Flamingock's runner claims an
//! **epoch** from the *audit store* (an atomic increment there, strictly
//! greater than every epoch claimed before), and every audit write it makes
//! carries that epoch; the audit store rejects, in the same atomic operation
//! as the write, any write whose epoch is lower than its fence. In the
//! shared-transaction strategy the check is inside the change's own
//! transaction. A runner that lost its lock, however it lost it, therefore
//! cannot commit or record anything once another runner took over.
//!
//! That holds even when Redis forgets everything: restarted without
//! persistence (the usual state of a cache) or failed over to a replica that
//! missed the latest writes, it can grant the lock to a second runner while
//! the first still believes it holds it, and even with the same token. The
//! second runner's epoch claim fences the first out (tested with a private
//! `redis-server` restarted under a paused runner). What such a Redis loss
//! can still cost is liveness and wasted work: two runners may both start
//! the same change; only the newest epoch records or commits it, and a
//! non-transactional change's effect may happen twice (as with any lost
//! lock). Run Redis with persistence where that matters.

//! ## Keys and scripts
//!
//! Both keys of a lock share the hash tag `{<prefix>}`, or `{<prefix>:<name>}`
//! for a named lock (prefix `flamingock` by default, see
//! [`RedisLockBuilder::prefix`] and [`RedisLockBuilder::name`]),
//! so each operation is one Lua script (`EVALSHA`) touching one slot, and
//! works on Redis Cluster. The lock key is a hash `{owner, token}` whose
//! Redis expiry is the lease; expiry is judged by the Redis server's clock.
//! Extending or releasing acts only when owner **and** token match, and
//! reports [`LockError::Lost`](flamingock_core::LockError::Lost) otherwise.
//! A key of the wrong type under the lock's name gives
//! [`LockError::Malformed`](flamingock_core::LockError::Malformed) naming
//! the key; it is never overwritten.
//!
//! ## TLS
//!
//! With the `tls` feature (on by default), `rediss://` URLs connect over TLS
//! (rustls), trusting the system's roots, or only the authority given to
//! [`RedisLockBuilder::ca_certificate`] (PEM) for a privately signed server.
//! The host name of the URL must be one the certificate names. When the
//! process has installed no rustls crypto provider, the lock installs
//! ring's. A wrong authority or a host name mismatch fails at connect with
//! an error saying which. Tested against a private `redis-server` with TLS
//! on (`tests/tls.rs`: the lock suite over `rediss://`, and the refusals).
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod error;
mod lock;
mod scripts;

pub use error::RedisLockError;
pub use lock::{RedisLock, RedisLockBuilder, RedisSource, DEFAULT_KEY_PREFIX};

/// The driver, re-exported so callers build a
/// [`ConnectionManager`](redis::aio::ConnectionManager) with the same version.
pub use redis;
