//! # flamingock-aws
//!
//! AWS [target systems](flamingock_core::TargetSystem) for
//! [Flamingock](flamingock_core), on the official SDK:
//!
//! * [`S3Target`] / [`S3Context`]: buckets, with versioning, lifecycle
//!   expiration rules and bucket policies.
//! * [`SqsTarget`] / [`SqsContext`]: queues, with attributes and dead-letter
//!   settings.
//!
//! Both are non-transactional (STARTED, apply, APPLIED). The helpers declare
//! **if absent** and set only what differs; a queue that exists with other
//! attributes is [`AwsError::Mismatch`] naming the queue and both attribute
//! sets (nothing is changed behind your back); `bucket_exists`,
//! `queue_exists` and the readers give what an "already in place" check
//! needs. Build the SDK clients as your application does (region,
//! credentials, endpoint); these targets take them as they are.
//!
//! Tested against moto's server, which departs from S3 in one place met
//! here: its `GetBucketVersioning` answer has the root element
//! `GetBucketVersioningResponse` instead of S3's `VersioningConfiguration`,
//! which the SDK refuses. So [`S3Context::set_versioning`] writes without
//! reading first (the call is idempotent), and [`S3Context::versioning`] is
//! not exercised by the tests here; use it against S3 itself.
//!
//! ```no_run
//! use flamingock_aws::{S3Context, S3Target};
//! use flamingock_core::{BoxError, Change, ChangeMeta, ChangeResult};
//!
//! struct AssetsBucket;
//! impl Change for AssetsBucket {
//!     type Target = S3Target;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("assets-bucket").order("0001").author("ana")
//!     }
//!     async fn apply(&self, s3: &mut S3Context) -> ChangeResult {
//!         s3.ensure_bucket("acme-assets").await?;
//!         s3.set_versioning("acme-assets", true).await?;
//!         s3.set_expiration("acme-assets", "tmp", "tmp/", 7).await?;
//!         Ok(())
//!     }
//!     async fn is_applied(&self, s3: &mut S3Context) -> Result<bool, BoxError> {
//!         Ok(s3.bucket_exists("acme-assets").await?
//!             && s3.expiration_days("acme-assets", "tmp").await? == Some(7))
//!     }
//! }
//!
//! # async fn demo(client: aws_sdk_s3::Client) -> Result<(), Box<dyn std::error::Error>> {
//! let s3 = S3Target::builder("assets", client).build().await?;
//! # let _ = s3; Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod error;
mod s3;
mod sqs;

pub use error::AwsError;
pub use s3::{S3Context, S3Target, S3TargetBuilder};
pub use sqs::{SqsContext, SqsQueueSpec, SqsTarget, SqsTargetBuilder};

/// Re-exported: the SDKs these targets are built on.
pub use {aws_sdk_s3, aws_sdk_sqs};
