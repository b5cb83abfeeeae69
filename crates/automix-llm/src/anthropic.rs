//! The Anthropic Messages API as a wire format of the HTTP backend
//! ([`crate::HttpBackend::anthropic`]): our OpenAI-shaped [`ChatRequest`] to a `/v1/messages`
//! body, and its reply back to a [`ChatResponse`].
//!
//! What maps: system messages become the top-level `system` prompt; user, assistant and tool
//! turns become `messages` with content blocks (a client's tool calls become `tool_use`
//! blocks, tool results `tool_result` blocks); `max_tokens` (required there; 1024 when
//! unset), `temperature`, `top_p` and `stop` (`stop_sequences`) carry over; `tools` are
//! translated from OpenAI's function form. The reply's text blocks are the answer, its
//! `tool_use` blocks OpenAI `tool_calls`, `stop_reason` the `finish_reason` (`end_turn` and
//! `stop_sequence` → `stop`, `max_tokens` → `length`, `tool_use` → `tool_calls`), `usage`
//! the token counts. The API has no `n`, `seed` or token logprobs: `n` is answered by
//! separate requests, and a logprob verification falls back to sampled verdicts (and says so).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use std::collections::VecDeque;

use crate::error::{LlmError, Result};
use crate::sse::SseEvent;
use crate::types::{ChatMessage, ChatRequest, ChatResponse, Choice, StreamDelta, Usage};

/// The API version header every request carries.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `max_tokens` when the request has none (the API requires one).
const DEFAULT_MAX_TOKENS: u32 = 1024;

/// The `/v1/messages` body of `request`.
pub(crate) fn body(request: &ChatRequest) -> Value {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.as_str())
        .collect();
    let messages: Vec<Value> = request
        .messages
        .iter()
        .filter(|m| m.role != "system")
        .map(message)
        .collect();
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    body.insert("messages".into(), Value::Array(messages));
    body.insert(
        "max_tokens".into(),
        json!(request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.extra.get("top_p") {
        body.insert("top_p".into(), p.clone());
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.stop));
    }
    if let Some(Value::Array(tools)) = request.extra.get("tools") {
        body.insert(
            "tools".into(),
            Value::Array(tools.iter().filter_map(tool).collect()),
        );
    }
    if let Some(user) = request.extra.get("user") {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    Value::Object(body)
}

/// One OpenAI message as an Anthropic message.
fn message(m: &ChatMessage) -> Value {
    let original = m.original.as_ref();
    match m.role.as_str() {
        "tool" => {
            let id = original
                .and_then(|o| o.get("tool_call_id"))
                .cloned()
                .unwrap_or(Value::Null);
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": id, "content": m.content}
            ]})
        }
        "assistant" => {
            let mut blocks = Vec::new();
            if !m.content.is_empty() {
                blocks.push(json!({"type": "text", "text": m.content}));
            }
            if let Some(Value::Array(calls)) = original.and_then(|o| o.get("tool_calls")) {
                blocks.extend(calls.iter().map(tool_use));
            }
            json!({"role": "assistant", "content": blocks})
        }
        _ => json!({"role": "user", "content": m.content}),
    }
}

/// An OpenAI tool call as a `tool_use` block (arguments parsed from their JSON string).
fn tool_use(call: &Value) -> Value {
    let arguments = call["function"]["arguments"]
        .as_str()
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
        .unwrap_or_else(|| json!({}));
    json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
        "input": arguments})
}

/// An OpenAI function tool as an Anthropic tool.
fn tool(t: &Value) -> Option<Value> {
    let f = t.get("function")?;
    Some(json!({
        "name": f.get("name")?,
        "description": f.get("description").cloned().unwrap_or(Value::Null),
        "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
    }))
}

#[derive(Deserialize)]
struct WireReply {
    #[serde(default)]
    model: Option<String>,
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

/// Our response of a `/v1/messages` reply body; `Malformed` with `excerpt` of the body when
/// it is not one.
pub(crate) fn parse(
    bytes: &[u8],
    endpoint: String,
    excerpt: impl Fn(&str) -> String,
) -> Result<ChatResponse> {
    let reply: WireReply = serde_json::from_slice(bytes).map_err(|e| LlmError::Malformed {
        endpoint,
        message: e.to_string(),
        body_excerpt: excerpt(&String::from_utf8_lossy(bytes)),
    })?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in reply.content {
        match block {
            WireBlock::Text { text: t } => text.push_str(&t),
            WireBlock::ToolUse { id, name, input } => calls.push(json!({
                "id": id, "type": "function",
                "function": {"name": name, "arguments": input.to_string()}
            })),
            WireBlock::Other => {}
        }
    }
    let finish_reason = reply.stop_reason.as_deref().map(finish_reason);
    let usage = reply.usage.map_or_else(Usage::default, |u| Usage {
        prompt_tokens: u.input_tokens,
        completion_tokens: u.output_tokens,
    });
    Ok(ChatResponse {
        model: reply.model.unwrap_or_default(),
        choices: vec![Choice {
            index: 0,
            text,
            finish_reason,
            logprobs: None,
            tool_calls: (!calls.is_empty()).then_some(Value::Array(calls)),
        }],
        usage,
        requests: 1,
    })
}

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
fn finish_reason(stop_reason: &str) -> String {
    match stop_reason {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        other => other,
    }
    .to_owned()
}

/// One event of a streamed `/v1/messages` reply into deltas: `content_block_delta` text is
/// the answer as it arrives, `message_delta`'s `stop_reason` the finish reason,
/// `message_stop` the end; an `error` event (e.g. `overloaded_error` mid-stream) ends the
/// stream with [`LlmError::Stream`]. `ping`, `message_start` and block starts and stops carry
/// no text. Returns true when the stream is over.
pub(crate) fn stream_event(
    event: &SseEvent,
    endpoint: &str,
    out: &mut VecDeque<Result<StreamDelta>>,
) -> bool {
    let broke = |out: &mut VecDeque<Result<StreamDelta>>, message: String| {
        out.push_back(Err(LlmError::Stream {
            endpoint: endpoint.to_owned(),
            message,
        }));
        true
    };
    let data: Value = match serde_json::from_str(&event.data) {
        Ok(v) => v,
        Err(e) if event.data.trim().is_empty() => return broke(out, format!("empty event: {e}")),
        Err(e) => return broke(out, format!("unparseable event: {e}")),
    };
    let kind = event
        .event
        .as_deref()
        .or(data["type"].as_str())
        .unwrap_or("");
    let delta = |content: String, finish_reason: Option<String>| StreamDelta {
        index: 0,
        content,
        finish_reason,
    };
    match kind {
        "content_block_delta" => {
            if let Some(text) = data["delta"]["text"].as_str() {
                out.push_back(Ok(delta(text.to_owned(), None)));
            }
            false
        }
        "message_delta" => {
            if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                out.push_back(Ok(delta(String::new(), Some(finish_reason(reason)))));
            }
            false
        }
        "message_stop" => true,
        "error" => {
            let what = data["error"]["type"].as_str().unwrap_or("error");
            broke(out, format!("the upstream sent {what} mid-stream"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_prompts_tools_and_tool_turns_map_to_the_messages_api() {
        let mut request = ChatRequest::new(
            "claude-x",
            vec![
                ChatMessage::system("Be brief."),
                ChatMessage::user("Weather in Rome?"),
            ],
        );
        let call = json!({"id": "call_0", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}});
        let mut assistant = ChatMessage::assistant("");
        assistant.original = json!({"role": "assistant", "content": null, "tool_calls": [call]})
            .as_object()
            .cloned();
        let mut tool = ChatMessage {
            role: "tool".into(),
            content: "sunny".into(),
            original: None,
        };
        tool.original = json!({"role": "tool", "tool_call_id": "call_0", "content": "sunny"})
            .as_object()
            .cloned();
        request.messages.extend([assistant, tool]);
        request.stop = vec!["\n\n".into()];
        request.extra.insert(
            "tools".into(),
            json!([{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object"}}}]),
        );
        let b = body(&request);
        assert_eq!(b["system"], "Be brief.");
        assert_eq!(b["max_tokens"], 1024);
        assert_eq!(b["stop_sequences"], json!(["\n\n"]));
        assert_eq!(
            b["messages"][0],
            json!({"role": "user", "content": "Weather in Rome?"})
        );
        assert_eq!(b["messages"][1]["content"][0]["type"], "tool_use");
        assert_eq!(
            b["messages"][1]["content"][0]["input"],
            json!({"city": "Rome"})
        );
        assert_eq!(b["messages"][2]["content"][0]["tool_use_id"], "call_0");
        assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object"}));
    }

    #[test]
    fn a_recorded_reply_maps_text_tool_use_stop_reason_and_usage() {
        // The shape of the API reference's example response.
        let reply = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                 "input": {"city": "Paris"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 12}
        });
        let r = parse(reply.to_string().as_bytes(), "e".into(), |s| s.to_owned()).unwrap();
        let c = &r.choices[0];
        assert_eq!(c.text, "Let me check.");
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
        let calls = c.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!((r.usage.prompt_tokens, r.usage.completion_tokens), (25, 12));
        let cut = json!({"content": [{"type": "text", "text": "..."}],
            "stop_reason": "max_tokens"});
        let r = parse(cut.to_string().as_bytes(), "e".into(), |s| s.to_owned()).unwrap();
        assert_eq!(r.choices[0].finish_reason.as_deref(), Some("length"));
        assert!(parse(b"{\"oops\": 1}", "e".into(), |s| s.to_owned()).is_err());
    }

    /// A recorded Messages API event stream (the API reference's example), split into
    /// 5-byte chunks: text arrives delta by delta, the stop reason maps, the stream ends at
    /// `message_stop`.
    #[tokio::test]
    async fn a_recorded_event_stream_arrives_as_deltas() {
        use futures::StreamExt;
        let raw = include_str!("../tests/it/fixtures/anthropic_stream.txt");
        let pieces: Vec<std::result::Result<bytes::Bytes, String>> = raw
            .as_bytes()
            .chunks(5)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let deltas: Vec<_> =
            crate::sse::event_deltas(futures::stream::iter(pieces), "e".into(), stream_event)
                .collect()
                .await;
        let deltas: Vec<StreamDelta> = deltas.into_iter().map(|d| d.unwrap()).collect();
        let text: String = deltas.iter().map(|d| d.content.as_str()).collect();
        assert_eq!(text, "Hello! Café 😀 here.");
        assert!(deltas.iter().filter(|d| !d.content.is_empty()).count() >= 3);
        assert_eq!(
            deltas.last().and_then(|d| d.finish_reason.as_deref()),
            Some("stop")
        );
    }

    #[tokio::test]
    async fn an_error_event_or_a_cut_stream_ends_in_a_stream_error() {
        use futures::StreamExt;
        for raw in [
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        ] {
            let pieces = vec![Ok::<_, String>(bytes::Bytes::from(raw))];
            let out: Vec<_> =
                crate::sse::event_deltas(futures::stream::iter(pieces), "e".into(), stream_event)
                    .collect()
                    .await;
            assert_eq!(out[0].as_ref().unwrap().content, "Hi");
            assert!(
                matches!(out.last(), Some(Err(LlmError::Stream { .. }))),
                "{out:?}"
            );
        }
    }
}
