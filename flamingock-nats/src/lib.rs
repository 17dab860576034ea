//! # flamingock-nats
//!
//! A NATS JetStream [target system](flamingock_core::TargetSystem) for
//! [Flamingock](flamingock_core): changes that declare streams and durable
//! consumers, on [async-nats](https://docs.rs/async-nats).
//!
//! Non-transactional (STARTED, apply, APPLIED). The helpers declare **if
//! absent**: a stream or consumer that exists as asked is left alone, one that
//! exists with another configuration is an error naming it and both
//! configurations ([`NatsError::Mismatch`]; nothing is updated behind your
//! back), and [`NatsContext::stream_exists`] /
//! [`NatsContext::consumer_exists`] give what an "already in place" check
//! needs:
//!
//! ```no_run
//! use flamingock_core::{BoxError, Change, ChangeMeta, ChangeResult};
//! use flamingock_nats::{NatsContext, NatsTarget, StreamSpec};
//!
//! struct OrdersStream;
//! impl Change for OrdersStream {
//!     type Target = NatsTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("orders-stream").order("0001").author("ana")
//!     }
//!     async fn apply(&self, nats: &mut NatsContext) -> ChangeResult {
//!         nats.declare_stream(&StreamSpec::new("ORDERS", ["orders.>"]).max_messages(100_000)).await?;
//!         nats.declare_consumer("ORDERS", "billing", Some("orders.created")).await?;
//!         Ok(())
//!     }
//!     async fn is_applied(&self, nats: &mut NatsContext) -> Result<bool, BoxError> {
//!         Ok(nats.consumer_exists("ORDERS", "billing").await?)
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let nats = NatsTarget::builder("events", "nats://127.0.0.1:4222").build().await?;
//! # let _ = nats; Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod context;
mod target;

pub use context::{NatsContext, NatsError, StreamSpec};
pub use target::{NatsTarget, NatsTargetBuilder};

/// Re-exported: the client this crate is built on.
pub use async_nats;
