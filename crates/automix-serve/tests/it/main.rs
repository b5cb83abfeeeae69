//! Integration tests of the proxy through HTTP (one binary).

#![allow(clippy::unwrap_used, missing_docs)]

mod dashboard;
mod fuzz;
mod hostile;
mod openai_sdk;
mod proxy;
mod real_llama;
mod redis;
mod shadow;
#[path = "../../../automix/tests/shared/support.rs"]
mod support;
