//! What the test files share: the server URL, small pools, schema cleanup,
//! and the backend as the suites drive it, all from
//! `flamingock_test_support::postgres` (written once, also used by
//! `flamingock-redis-lock`).
#![allow(dead_code, unused_imports, unreachable_pub)]

pub use flamingock_test_support::postgres::{
    drop_schemas, footprint, options, pool, pool_with, url,
};

pub mod sut {
    pub use flamingock_test_support::postgres::Pg;
}
