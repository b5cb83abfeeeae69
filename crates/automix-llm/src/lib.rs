//! Model access for AutoMix. Every model call goes through [`ChatProvider`].
//!
//! - [`HttpBackend`]: any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server,
//!   Ollama `/v1`, OpenRouter) with retries (exponential backoff, full jitter,
//!   `Retry-After`), a per-request timeout and an overall deadline, a concurrency limit,
//!   `n` samples with a fallback to concurrent single requests with distinct seeds where
//!   the server rejects `n`, logprobs, and incremental SSE streaming.
//! - [`Catalogue`]: models from LLMRouter's llm_data JSON, with prices and per-model
//!   endpoints and key variables; [`ModelEntry::cost`] turns usage into money.
//! - [`ScriptedProvider`] and, with the `test-support` feature, `FakeOpenAi`: test doubles.
//!
//! API keys live in [`ApiKey`], whose `Debug` is redacted; errors carry endpoints and body
//! excerpts with the key removed, never the key.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod anthropic;
mod catalogue;
mod error;
#[cfg(feature = "test-support")]
pub mod fake_server;
mod http;
pub mod openai;
mod provider;
mod scripted;
pub mod sse;
pub mod sync;
mod types;

pub use catalogue::{ApiKey, Catalogue, CatalogueError, ModelEntry, parse_size};
pub use error::{LlmError, Result};
pub use http::{Dialect, EndpointConfig, HttpBackend};
pub use openai::sse_deltas;

/// The HTTP backend's former name, kept for existing code: it speaks every wire format.
pub type OpenAiBackend = HttpBackend;
pub use provider::{ChatProvider, DeltaStream};
pub use scripted::{ScriptedProvider, response};
pub use types::{
    ChatMessage, ChatRequest, ChatResponse, Choice, StreamDelta, TokenLogprob, TopLogprob, Usage,
};
