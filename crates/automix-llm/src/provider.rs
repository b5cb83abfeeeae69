//! The provider trait: every model call in AutoMix goes through it.

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

use crate::error::Result;
use crate::types::{ChatRequest, ChatResponse, StreamDelta};

/// A stream of deltas; ends after the last delta, or yields an error if the stream broke.
pub type DeltaStream = Pin<Box<dyn Stream<Item = Result<StreamDelta>> + Send>>;

/// A chat-completion backend.
///
/// Implementations must honour `n` (return `n` choices, by whatever means), `seed`,
/// `logprobs`/`top_logprobs` where the model can, and report token usage. To add a
/// backend, implement [`ChatProvider::chat`]; [`ChatProvider::chat_stream`] is optional.
///
/// ```
/// use async_trait::async_trait;
/// use automix_llm::*;
///
/// /// Answers every prompt with its own last message, reversed.
/// struct Reverser;
///
/// #[async_trait]
/// impl ChatProvider for Reverser {
///     async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse> {
///         let last = request.messages.last().map(|m| m.content.chars().rev().collect()).unwrap_or_default();
///         let choices = (0..request.n)
///             .map(|i| Choice { index: i, text: String::clone(&last), finish_reason: Some("stop".into()), logprobs: None, tool_calls: None })
///             .collect();
///         Ok(ChatResponse { model: request.model.clone(), choices, usage: Usage::default(), requests: 1 })
///     }
/// }
///
/// # tokio_test_block_on(async {
/// let provider: Box<dyn ChatProvider> = Box::new(Reverser);
/// let reply = provider.chat(&ChatRequest::new("any", vec![ChatMessage::user("abc")])).await.unwrap();
/// assert_eq!(reply.choices[0].text, "cba");
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[async_trait]
pub trait ChatProvider: Send + Sync {
    /// One chat completion with `request.n` choices.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse>;

    /// Streams one choice of a completion.
    async fn chat_stream(&self, request: &ChatRequest) -> Result<DeltaStream> {
        let _ = request;
        Err(crate::LlmError::Unsupported("streaming".into()))
    }
}
