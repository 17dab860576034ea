//! # flamingock-rabbitmq
//!
//! A RabbitMQ [target system](flamingock_core::TargetSystem) for
//! [Flamingock](flamingock_core): changes that declare exchanges, queues and
//! bindings, on [lapin](https://docs.rs/lapin).
//!
//! A broker has no transactions that cover declarations, so changes here run
//! with the **non-transactional** strategy (STARTED, apply, APPLIED). The
//! context's helpers are idempotent where AMQP allows it (declaring what
//! exists with the same settings is a no-op), refuse loudly where it does not
//! (a queue that exists **with other arguments** is an error naming the queue,
//! the arguments asked for and the broker's answer about the one that differs;
//! nothing is redeclared), and give what an "already in place" check needs
//! ([`RabbitContext::queue_exists`], [`RabbitContext::exchange_exists`]), so a
//! change that crashed half-way is settled by the next run instead of an
//! operator:
//!
//! ```no_run
//! use flamingock_core::{BoxError, Change, ChangeMeta, ChangeResult};
//! use flamingock_rabbitmq::{ExchangeKind, QueueSpec, RabbitContext, RabbitTarget};
//!
//! struct OrdersQueue;
//! impl Change for OrdersQueue {
//!     type Target = RabbitTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("orders-queue").order("0001").author("ana")
//!     }
//!     async fn apply(&self, mq: &mut RabbitContext) -> ChangeResult {
//!         mq.declare_exchange("orders", ExchangeKind::Topic).await?;
//!         mq.declare_queue(&QueueSpec::durable("orders.created").max_length(10_000)).await?;
//!         mq.bind_queue("orders.created", "orders", "order.created").await?;
//!         Ok(())
//!     }
//!     async fn is_applied(&self, mq: &mut RabbitContext) -> Result<bool, BoxError> {
//!         Ok(mq.queue_exists("orders.created").await? && mq.exchange_exists("orders").await?)
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = RabbitTarget::builder("broker", "amqp://guest:guest@127.0.0.1:5672/%2f")
//!     .build()
//!     .await?;
//! # let _ = broker; Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod context;
mod error;
mod spec;
mod target;

pub use context::RabbitContext;
pub use error::RabbitError;
pub use spec::{ExchangeKind, QueueSpec};
pub use target::{RabbitTarget, RabbitTargetBuilder};

/// Re-exported: the client this crate is built on.
pub use lapin;
