//! Integration tests of automix-verify through its public interface (one binary).

#![allow(clippy::unwrap_used, missing_docs)]

mod parser_props;
mod real_llama;
mod templates;
mod verifier;
