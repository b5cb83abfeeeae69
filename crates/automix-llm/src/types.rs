//! Chat-completion request and response types (OpenAI wire shape, provider neutral).

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// One chat message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text (text parts joined; empty for `null` content): what prompts and verification
    /// read.
    #[serde(default)]
    pub content: String,
    /// A client's message as it came (content parts, `null` content, `tool_calls`,
    /// `tool_call_id`, `name`, …): sent upstream verbatim instead of `role` + `content`.
    #[serde(skip)]
    pub original: Option<Map<String, Value>>,
}

impl Serialize for ChatMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.original {
            Some(original) => original.serialize(serializer),
            None => {
                let mut m = Map::new();
                m.insert("role".into(), Value::String(self.role.clone()));
                m.insert("content".into(), Value::String(self.content.clone()));
                m.serialize(serializer)
            }
        }
    }
}

impl ChatMessage {
    fn text(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            original: None,
        }
    }
    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::text("system", content)
    }
    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::text("user", content)
    }
    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::text("assistant", content)
    }
}

/// A chat-completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Upstream model id (llm_data `model`).
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Completion token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Sampling seed; with `n > 1` the fallback uses `seed + i` for sample `i`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Number of samples.
    #[serde(default = "one")]
    pub n: u32,
    /// Ask for per-token logprobs.
    #[serde(default)]
    pub logprobs: bool,
    /// Alternatives per token when `logprobs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u8>,
    /// A client's fields this crate does not interpret (`tools`, `tool_choice`,
    /// `response_format`, `top_p`, `user`, penalties, …): sent upstream as they came. The
    /// fields above win where both are set.
    #[serde(flatten, default)]
    pub extra: Map<String, Value>,
}

fn one() -> u32 {
    1
}

impl ChatRequest {
    /// A one-sample request with no sampling options.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            messages,
            temperature: None,
            max_tokens: None,
            stop: Vec::new(),
            seed: None,
            n: 1,
            logprobs: false,
            top_logprobs: None,
            extra: Map::new(),
        }
    }
}

/// One alternative token and its log probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token text.
    pub token: String,
    /// Natural-log probability.
    pub logprob: f64,
}

/// A generated token with its log probability and the top alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token text.
    pub token: String,
    /// Natural-log probability.
    pub logprob: f64,
    /// Alternatives at this position (including the chosen token when the server lists it).
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

/// One sampled completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Position among the samples.
    pub index: u32,
    /// The text.
    pub text: String,
    /// `stop`, `length`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Per-token logprobs, when asked for and returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// The message's `tool_calls`, verbatim, when the model called tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
}

impl Choice {
    /// A plain text completion that stopped normally (what a custom provider usually returns).
    pub fn text(index: u32, text: impl Into<String>) -> Self {
        Self {
            index,
            text: text.into(),
            finish_reason: Some("stop".into()),
            logprobs: None,
            tool_calls: None,
        }
    }
}

/// Token usage of a response (all requests summed when `n` fell back to single requests):
/// the one token-usage type, `automix_core::TokenUsage`. (Training rows keep their own file
/// shape, `automix::dataset::Tokens`, converted at the edge.)
pub use automix_core::TokenUsage as Usage;

/// A chat-completion response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The model that answered, as the server names it.
    pub model: String,
    /// Samples, `index` 0..n.
    pub choices: Vec<Choice>,
    /// Token usage.
    pub usage: Usage,
    /// Upstream HTTP requests made (retries and `n` fallback included).
    pub requests: u32,
}

/// One streamed delta.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamDelta {
    /// Choice index.
    pub index: u32,
    /// Text added by this chunk.
    pub content: String,
    /// Set on the final chunk of a choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}
