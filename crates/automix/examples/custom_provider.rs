//! Route a batch through the runtime with your own backend: implement `ChatProvider`, wrap
//! it in a `ModelHandle`, and the router answers, self-verifies and escalates through it.
//!
//! `cargo run -p automix --example custom_provider`

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use automix::dataset::{QueryRow, query_id};
use automix::llm::{ChatProvider, ChatRequest, ChatResponse, Choice, ModelEntry, Usage};
use automix::verify::PromptSet;
use automix::{Config, ModelHandle, ModelSet, Router};

/// A toy backend: the "small" model only knows arithmetic, and says so when verifying.
struct Toy {
    knows_everything: bool,
}

#[async_trait]
impl ChatProvider for Toy {
    async fn chat(&self, request: &ChatRequest) -> automix::llm::Result<ChatResponse> {
        let prompt = request.messages.last().map_or("", |m| m.content.as_str());
        let verifying = prompt.contains("AI generated answer");
        let arithmetic = prompt.contains('+');
        let text = match (verifying, self.knows_everything || arithmetic) {
            (true, true) => "Correct",
            (true, false) => "Incorrect",
            (false, true) if arithmetic => "4",
            (false, true) => "William Shakespeare",
            (false, false) => "I am not sure",
        };
        let choices = (0..request.n).map(|i| Choice::text(i, text)).collect();
        Ok(ChatResponse {
            model: request.model.clone(),
            choices,
            usage: Usage {
                prompt_tokens: 50,
                completion_tokens: 2,
            },
            requests: 1,
        })
    }
}

fn handle(name: &str, price: f64, knows_everything: bool) -> ModelHandle {
    ModelHandle {
        entry: ModelEntry {
            name: name.into(),
            parameters: price * 1e9,
            input_price: price,
            output_price: price,
            model: name.into(),
            service: None,
            api_endpoint: None,
            api_key_env: None,
        },
        provider: Arc::new(Toy { knows_everything }),
    }
}

#[tokio::main]
async fn main() -> automix::Result<()> {
    let config = Config::parse(
        "automix:\n  verification_samples: 3\n  use_logprob_verification: false\n",
        Path::new("example.yaml"),
    )?;
    let models = ModelSet::new(vec![
        handle("toy-small", 1.0, false),
        handle("toy-large", 20.0, true),
    ])?;
    // No trained policy: the threshold rule on the verifier's confidence decides.
    let router = Router::new(&config, models, Arc::new(PromptSet::builtin()), None)?;
    let queries: Vec<QueryRow> = ["What is 2+2?", "Who wrote Hamlet?"]
        .iter()
        .map(|q| QueryRow {
            id: query_id("demo", q),
            task_name: "demo".into(),
            query: (*q).into(),
            ground_truth: None,
            metric: None,
            choices: Vec::new(),
            task_id: None,
            context: None,
        })
        .collect();
    for item in router.route_batch(&queries).await {
        let o = item.outcome.expect("the toy backend does not fail");
        let decision = match o.steps.first().map(|s| s.decision) {
            Some(automix::core::Decision::Keep) => "keep",
            Some(automix::core::Decision::Escalate) => "escalate",
            None => "no step",
        };
        let score = o
            .verification_score
            .map_or("none".to_owned(), |p| format!("{p:.2}"));
        println!(
            "{decision}: {} via {} (verification score {score})",
            o.response,
            o.escalation_path.join(" → "),
        );
    }
    Ok(())
}
