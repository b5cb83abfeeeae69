//! Integration tests of automix-llm against the in-process fake OpenAI server.

#![allow(clippy::unwrap_used)]

mod faults;
mod providers;
mod real_llama;
