//! # flamingock-http
//!
//! An HTTP API [target system](flamingock_core::TargetSystem) for
//! [Flamingock](flamingock_core): changes that set configuration or feature
//! flags through a service's JSON API, on [reqwest](https://docs.rs/reqwest).
//!
//! Non-transactional (STARTED, apply, APPLIED). [`HttpContext`]'s helpers make
//! a change safe to run again where the API allows it:
//! [`put_if_changed`](HttpContext::put_if_changed) writes only what differs,
//! [`put_if_match`](HttpContext::put_if_match) is a compare-and-set on the
//! resource's `ETag` (a concurrent edit is an error, never overwritten), and
//! [`get_json`](HttpContext::get_json) gives what an "already in place" check
//! needs. Every failure names the method, the URL and the status, with the
//! start of the response body.
//!
//! ```no_run
//! use flamingock_core::{BoxError, Change, ChangeMeta, ChangeResult};
//! use flamingock_http::{HttpContext, HttpTarget};
//! use serde_json::json;
//!
//! struct EnableNewCheckout;
//! impl Change for EnableNewCheckout {
//!     type Target = HttpTarget;
//!     fn meta(&self) -> ChangeMeta {
//!         ChangeMeta::new("enable-new-checkout").order("0003").author("ana")
//!     }
//!     async fn apply(&self, api: &mut HttpContext) -> ChangeResult {
//!         api.put_if_changed("/flags/new-checkout", &json!({"enabled": true})).await?;
//!         Ok(())
//!     }
//!     async fn is_applied(&self, api: &mut HttpContext) -> Result<bool, BoxError> {
//!         Ok(api.get_json("/flags/new-checkout").await? == Some(json!({"enabled": true})))
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let flags = HttpTarget::builder("flags-api", "http://flags.internal:8080")
//!     .bearer_token("...")
//!     .build()
//!     .await?;
//! # let _ = flags; Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod context;
mod target;

pub use context::{HttpContext, HttpError};
pub use target::{HttpTarget, HttpTargetBuilder};

/// Re-exported: the client this crate is built on.
pub use reqwest;
