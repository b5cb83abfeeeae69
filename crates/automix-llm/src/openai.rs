//! The OpenAI chat-completions wire format: our [`ChatRequest`] to a `/chat/completions`
//! body, its reply and its stream events back. The transport is [`crate::HttpBackend`].

use std::collections::VecDeque;

use bytes::Bytes;
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{LlmError, Result};
use crate::sse::{SseEvent, event_deltas};
use crate::types::{
    ChatRequest, ChatResponse, Choice, StreamDelta, TokenLogprob, TopLogprob, Usage,
};

/// The `/chat/completions` body of `request`: the client's uninterpreted fields, then ours.
pub(crate) fn body(request: &ChatRequest, n: u32, seed: Option<u64>, stream: bool) -> Value {
    // The client's uninterpreted fields first: the ones we set below win.
    let mut body = Value::Object(request.extra.clone());
    let obj = body.as_object_mut().expect("an object");
    obj.insert("model".into(), json!(request.model));
    obj.insert("messages".into(), json!(request.messages));
    if let Some(t) = request.temperature {
        obj.insert("temperature".into(), json!(t));
    }
    if let Some(m) = request.max_tokens {
        obj.insert("max_tokens".into(), json!(m));
    }
    if !request.stop.is_empty() {
        obj.insert("stop".into(), json!(request.stop));
    }
    if let Some(s) = seed {
        obj.insert("seed".into(), json!(s));
    }
    if n > 1 {
        obj.insert("n".into(), json!(n));
    }
    if request.logprobs {
        obj.insert("logprobs".into(), json!(true));
        if let Some(k) = request.top_logprobs {
            obj.insert("top_logprobs".into(), json!(k));
        }
    }
    if stream {
        obj.insert("stream".into(), json!(true));
    }
    body
}

/// Our response of a `/chat/completions` reply body; `Malformed` with `excerpt` of the
/// body when it is not one.
pub(crate) fn parse(
    bytes: &[u8],
    endpoint: String,
    excerpt: impl Fn(&str) -> String,
) -> Result<ChatResponse> {
    let wire: WireResponse = serde_json::from_slice(bytes).map_err(|e| LlmError::Malformed {
        endpoint,
        message: e.to_string(),
        body_excerpt: excerpt(&String::from_utf8_lossy(bytes)),
    })?;
    let choices = wire
        .choices
        .into_iter()
        .map(|c| Choice {
            index: c.index,
            tool_calls: c.message.as_ref().and_then(|m| m.tool_calls.clone()),
            text: c
                .message
                .and_then(|m| m.content)
                .or(c.text)
                .unwrap_or_default(),
            finish_reason: c.finish_reason,
            logprobs: c.logprobs.and_then(|l| l.content).map(|toks| {
                toks.into_iter()
                    .map(|t| TokenLogprob {
                        token: t.token,
                        logprob: t.logprob,
                        top_logprobs: t
                            .top_logprobs
                            .into_iter()
                            .map(|a| TopLogprob {
                                token: a.token,
                                logprob: a.logprob,
                            })
                            .collect(),
                    })
                    .collect()
            }),
        })
        .collect();
    let usage = wire
        .usage
        .map(|u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        })
        .unwrap_or_default();
    Ok(ChatResponse {
        model: wire.model.unwrap_or_default(),
        choices,
        usage,
        requests: 1,
    })
}

/// Parses an OpenAI SSE byte stream incrementally into deltas (through [`SseDecoder`], so
/// characters split across chunks arrive whole). A stream that ends without `data: [DONE]`,
/// or whose transport fails, yields a final [`LlmError::Stream`].
pub fn sse_deltas<S>(bytes: S, endpoint: String) -> impl Stream<Item = Result<StreamDelta>> + Send
where
    S: Stream<Item = std::result::Result<Bytes, String>> + Send + 'static,
{
    event_deltas(bytes, endpoint, stream_event)
}

/// One OpenAI stream event's deltas into `out`; true when the stream is over (`[DONE]`, or
/// an event that does not parse, which ends it with an error).
pub(crate) fn stream_event(
    event: &SseEvent,
    endpoint: &str,
    out: &mut VecDeque<Result<StreamDelta>>,
) -> bool {
    let data = event.data.trim();
    if data.is_empty() {
        return false;
    }
    if data == "[DONE]" {
        return true;
    }
    match serde_json::from_str::<WireChunk>(data) {
        Ok(chunk) => {
            out.extend(chunk.choices.into_iter().map(|c| {
                Ok(StreamDelta {
                    index: c.index,
                    content: c.delta.and_then(|d| d.content).unwrap_or_default(),
                    finish_reason: c.finish_reason,
                })
            }));
            false
        }
        Err(e) => {
            out.push_back(Err(LlmError::Stream {
                endpoint: endpoint.to_owned(),
                message: format!("unparseable event: {e}"),
            }));
            true
        }
    }
}

#[derive(Deserialize)]
struct WireResponse {
    model: Option<String>,
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    index: u32,
    message: Option<WireMessage>,
    text: Option<String>,
    finish_reason: Option<String>,
    logprobs: Option<WireLogprobs>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<String>,
    tool_calls: Option<Value>,
}

#[derive(Deserialize)]
struct WireLogprobs {
    content: Option<Vec<WireToken>>,
}

#[derive(Deserialize)]
struct WireToken {
    token: String,
    logprob: f64,
    #[serde(default)]
    top_logprobs: Vec<WireTop>,
}

#[derive(Deserialize)]
struct WireTop {
    token: String,
    logprob: f64,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Deserialize)]
struct WireChunk {
    choices: Vec<WireChunkChoice>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    index: u32,
    delta: Option<WireMessage>,
    finish_reason: Option<String>,
}
