//! # flamingock-kafka
//!
//! A Kafka [target system](flamingock_core::TargetSystem) for
//! [Flamingock](flamingock_core): changes that declare topics through the
//! admin API, on [rskafka](https://docs.rs/rskafka) (pure Rust: no
//! librdkafka, no C toolchain, no system library).
//!
//! Non-transactional (STARTED, apply, APPLIED). [`KafkaContext::declare_topic`]
//! creates **if absent**: a topic that exists with the partition count asked
//! for is left alone, one that exists with another is an error naming the
//! topic and both counts ([`KafkaError::Mismatch`]; nothing is altered behind
//! your back), and [`KafkaContext::topic_exists`] gives what an "already in
//! place" check needs:
//!
//! ```no_run
//! use flamingock_core::{BoxError, Change, ChangeMeta, ChangeResult};
//! use flamingock_kafka::{KafkaContext, KafkaTarget, TopicSpec};
//!
//! struct OrdersTopic;
//! impl Change for OrdersTopic {
//!     type Target = KafkaTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("orders-topic").order("0001").author("ana")
//!     }
//!     async fn apply(&self, kafka: &mut KafkaContext) -> ChangeResult {
//!         kafka.declare_topic(&TopicSpec::new("orders", 6).replication_factor(3)).await?;
//!         Ok(())
//!     }
//!     async fn rollback(&self, kafka: &mut KafkaContext) -> ChangeResult {
//!         kafka.delete_topic("orders").await?;
//!         Ok(())
//!     }
//!     async fn is_applied(&self, kafka: &mut KafkaContext) -> Result<bool, BoxError> {
//!         Ok(kafka.topic_exists("orders").await?)
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let kafka = KafkaTarget::builder("events", ["127.0.0.1:9092"]).build().await?;
//! # let _ = kafka; Ok(()) }
//! ```
//!
//! ## Bounds
//!
//! Connecting and every admin request are bounded by the target's
//! [`timeout`](KafkaTargetBuilder::timeout) (default 30 s): rskafka's own
//! retries would otherwise go on without end against an unreachable
//! cluster.
//!
//! ## What this client does not do
//!
//! rskafka's admin API creates and deletes topics with a partition count and
//! replication factor; it does not set topic configurations
//! (`retention.ms`, `cleanup.policy`), add partitions, or read a topic's
//! replication factor back. An existing topic is therefore judged on its
//! partition count. Changes needing more can use [`KafkaContext::client`]
//! for records, or a separate admin client in a change of their own.
//!
//! ## Tests
//!
//! No broker runs on the machines this project's CI uses (no Docker engine).
//! The tests against a real broker are marked ignored with that reason; they
//! run with `cargo test -p flamingock-kafka -- --ignored` given
//! `FLAMINGOCK_TEST_KAFKA_URL=host:port`, or, with the
//! `flamingock-test-support/testcontainers` feature and Docker, against an
//! `apache/kafka` container the tests start (the GitHub workflow's
//! containers job does this).
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod context;
mod target;
mod topic;

pub use context::{KafkaContext, KafkaError};
pub use target::{KafkaTarget, KafkaTargetBuilder, DEFAULT_TIMEOUT};
pub use topic::{TopicInfo, TopicSpec};

/// Re-exported: the client this crate is built on.
pub use rskafka;
