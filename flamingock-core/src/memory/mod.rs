//! In-memory reference implementations of the whole contract (fencing
//! included): the reference every backend is compared with, and the backend
//! of unit tests and benchmarks. Nothing here survives the process.

mod lock;
mod store;
mod target;

pub use lock::InMemoryLock;
pub use store::InMemoryAuditStore;
pub use target::{InMemoryTarget, KvTx};
