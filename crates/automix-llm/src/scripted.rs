//! A scripted in-memory provider for tests of the crates above this one.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::{LlmError, Result};
use crate::provider::ChatProvider;
use crate::sync::lock;
use crate::types::{ChatRequest, ChatResponse, Choice, Usage};

type Responder = Box<dyn Fn(&ChatRequest) -> Result<ChatResponse> + Send + Sync>;

/// Replies from a queue, then from an optional fallback function; records every request.
pub struct ScriptedProvider {
    queue: Mutex<VecDeque<Result<ChatResponse>>>,
    fallback: Option<Responder>,
    seen: Mutex<Vec<ChatRequest>>,
}

impl ScriptedProvider {
    /// Replies with `replies` in order; errors once they run out.
    pub fn new(replies: Vec<Result<ChatResponse>>) -> Self {
        Self {
            queue: Mutex::new(replies.into()),
            fallback: None,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Replies by calling `f` for every request.
    pub fn from_fn(
        f: impl Fn(&ChatRequest) -> Result<ChatResponse> + Send + Sync + 'static,
    ) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            fallback: Some(Box::new(f)),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<ChatRequest> {
        lock(&self.seen).clone()
    }
}

/// A response with one choice per text and the given usage.
pub fn response(model: &str, texts: &[&str], usage: Usage) -> ChatResponse {
    let choices = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Choice::text(i as u32, *t))
        .collect();
    ChatResponse {
        model: model.to_owned(),
        choices,
        usage,
        requests: 1,
    }
}

#[async_trait]
impl ChatProvider for ScriptedProvider {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse> {
        lock(&self.seen).push(request.clone());
        let next = lock(&self.queue).pop_front();
        match (next, &self.fallback) {
            (Some(reply), _) => reply,
            (None, Some(f)) => f(request),
            (None, None) => Err(LlmError::Scripted(format!(
                "no reply scripted for request to {}",
                request.model
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChatMessage;

    #[tokio::test]
    async fn replies_in_order_then_from_fn_then_records() {
        let p = ScriptedProvider::new(vec![
            Ok(response("m", &["a"], Usage::default())),
            Err(LlmError::Scripted("boom".into())),
        ]);
        let r = ChatRequest::new("m", vec![ChatMessage::user("q")]);
        assert_eq!(p.chat(&r).await.unwrap().choices[0].text, "a");
        assert!(p.chat(&r).await.is_err());
        assert!(matches!(p.chat(&r).await, Err(LlmError::Scripted(_))));
        assert_eq!(p.requests().len(), 3);
        let f = ScriptedProvider::from_fn(|req| {
            Ok(response(
                &req.model,
                &["x"; 2],
                Usage {
                    prompt_tokens: 1,
                    completion_tokens: 2,
                },
            ))
        });
        assert_eq!(f.chat(&r).await.unwrap().choices.len(), 2);
    }
}
