//! Integration tests of the runtime through its public interface (one binary).

#![allow(clippy::unwrap_used, missing_docs)]

mod config;
mod data;
mod quality;
mod real_llama;
mod router;
mod strategies;
#[path = "../shared/support.rs"]
mod support;
mod tidy;
mod traffic;
