//! The workspace README, whose `rust` code blocks `cargo test` compiles as
//! doc tests of this crate. Its dependencies are exactly those the README
//! tells users to add (`tests/dependencies.rs` checks that), so an example
//! that needs anything else fails here, as it would in a user's project.
//! Blocks marked `rust,ignore` are fragments and are not compiled.
// The README is written for GitHub: its relative links and `<id>`-style
// placeholders are not rustdoc's business.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
#![doc = include_str!("../../../README.md")]
