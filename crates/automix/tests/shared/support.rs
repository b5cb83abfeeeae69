//! Shared builders for the integration tests of the runtime and of `automix-serve` (one file,
//! included by both test binaries).

// Each binary uses a part of this file.
#![allow(dead_code)]

use automix::dataset::{ModelRun, Tokens, TrainingRow, VerificationRecord};

/// One model's part of a synthetic training row.
pub struct Run<'a> {
    /// llm_data name.
    pub model: &'a str,
    /// Whether its answer is right (score 1 or 0).
    pub right: bool,
    /// Money per answer.
    pub cost: f64,
    /// The verifier's `p_ver`; `None` for a model that is not verified.
    pub confidence: Option<f64>,
}

/// A training row of task `task` with one run per model, cheapest first.
pub fn training_row(id: usize, task: &str, runs: &[Run<'_>]) -> TrainingRow {
    let models = runs
        .iter()
        .map(|r| ModelRun {
            model: r.model.into(),
            answer: String::new(),
            normalised_answer: String::new(),
            score: f64::from(r.right),
            tokens: Tokens {
                prompt: 10,
                completion: 1,
            },
            cost: r.cost,
            latency_ms: 1,
            verification: r.confidence.map(|p| VerificationRecord {
                samples: 3,
                correct: (p * 3.0).round() as u32,
                incorrect: 3 - (p * 3.0).round() as u32,
                unparsed: 0,
                p_ver: Some(p),
                logprob_p: None,
                logprob_source: String::new(),
                tokens: Tokens {
                    prompt: 30,
                    completion: 1,
                },
                cost: r.cost / 10.0,
                ..VerificationRecord::default()
            }),
        })
        .collect();
    TrainingRow {
        id: format!("r{id}"),
        task_name: task.into(),
        metric: "em_mc".into(),
        query: String::new(),
        ground_truth: "B".into(),
        split: "train".into(),
        models,
        label_source: automix::dataset::LabelSource::GroundTruth,
    }
}

/// Rows of a small and a large model: the small one is right on even rows and its verifier
/// says so (confidence 1 or 0; or `confidence` for every row when given), the large one is
/// always right at ten times the cost.
pub fn two_model_rows(
    n: usize,
    small: &str,
    large: &str,
    confidence: Option<f64>,
) -> Vec<TrainingRow> {
    (0..n)
        .map(|i| {
            let right = i % 2 == 0;
            let runs = [
                Run {
                    model: small,
                    right,
                    cost: 1.0,
                    confidence: Some(confidence.unwrap_or(if right { 1.0 } else { 0.0 })),
                },
                Run {
                    model: large,
                    right: true,
                    cost: 10.0,
                    confidence: None,
                },
            ];
            training_row(i, "mmlu", &runs)
        })
        .collect()
}

/// A multiple-choice query of task `mmlu` whose right answer is "B".
pub fn mc_query(q: &str) -> automix::dataset::QueryRow {
    automix::dataset::QueryRow {
        id: automix::dataset::query_id("mmlu", q),
        task_name: "mmlu".into(),
        query: q.into(),
        ground_truth: Some("B".into()),
        metric: Some("em_mc".into()),
        choices: vec![("A".into(), "one".into()), ("B".into(), "two".into())],
        task_id: None,
        context: None,
    }
}

/// An llm_data entry priced `price` per token (and `price` billion parameters).
pub fn entry(name: &str, price: f64, api_endpoint: Option<String>) -> automix::llm::ModelEntry {
    automix::llm::ModelEntry {
        name: name.into(),
        parameters: price * 1e9,
        input_price: price,
        output_price: price,
        model: format!("api/{name}"),
        service: None,
        api_endpoint,
        api_key_env: None,
    }
}

/// A scripted model answering `answer`; its self-verification answers `verdicts` (cycled
/// over the samples).
pub fn scripted_model(
    name: &str,
    price: f64,
    answer: &'static str,
    verdicts: &'static [&'static str],
) -> (
    automix::ModelHandle,
    std::sync::Arc<automix::llm::ScriptedProvider>,
) {
    use automix::llm::{ScriptedProvider, Usage, response};
    let provider = std::sync::Arc::new(ScriptedProvider::from_fn(move |req| {
        let verifying = req
            .messages
            .iter()
            .any(|m| m.content.contains("AI generated answer"));
        let texts: Vec<&str> = if verifying {
            (0..req.n as usize)
                .map(|i| verdicts[i % verdicts.len()])
                .collect()
        } else {
            vec![answer]
        };
        let usage = Usage {
            prompt_tokens: 100,
            completion_tokens: 10,
        };
        Ok(response(&req.model, &texts, usage))
    }));
    let handle = automix::ModelHandle {
        entry: entry(name, price, None),
        provider: provider.clone(),
    };
    (handle, provider)
}

/// A local llama.cpp server at `base` as a model named (and served as) `name`.
pub fn local_model(name: &str, price: f64, base: String) -> automix::ModelHandle {
    use automix::llm::{EndpointConfig, HttpBackend};
    let mut entry = entry(name, price, Some(base.clone()));
    entry.model = name.into();
    let backend = HttpBackend::new(EndpointConfig::new(base)).unwrap();
    automix::ModelHandle {
        entry,
        provider: std::sync::Arc::new(backend),
    }
}

/// A redis-server on a free loopback port, stopped on drop.
pub struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// A redis-server with `extra` arguments; with `--tls-port` among them, the port is
    /// the TLS one and the plain port is off.
    pub fn start_with(extra: &[String]) -> Option<Self> {
        let bin = std::env::var("AUTOMIX_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let found = std::process::Command::new(&bin)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var_os("AUTOMIX_REQUIRE_REDIS").is_none(),
                "redis-server not found ({bin})"
            );
            eprintln!("skipped: no redis-server (cargo xtask e2e installs it)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tls = extra.iter().any(|a| a == "--tls-port");
        let port_arg = port.to_string();
        let ports = if tls {
            vec![
                "--port",
                "0",
                "--tls-port",
                &port_arg,
                "--bind",
                "127.0.0.1",
            ]
        } else {
            vec!["--port", &port_arg, "--bind", "127.0.0.1"]
        };
        let extra: Vec<&String> = extra.iter().filter(|a| *a != "--tls-port").collect();
        let child = std::process::Command::new(&bin)
            .args(ports)
            .args(extra)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let up = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "redis-server did not start on {port}");
        Some(Self { child, port })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops answering without losing data (SIGSTOP), like a stalled or partitioned server.
    pub fn pause(&self) {
        signal(&self.child, "-STOP");
    }

    pub fn resume(&self) {
        signal(&self.child, "-CONT");
    }
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} failed");
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rows of `small` and `large` (always right, ten times the cost) where the small model is
/// right on two rows of three and its verifier says so (`honest`), or says the opposite
/// (confidence 1 exactly when it is wrong): what a policy trained on the one set gets wrong
/// on the other.
pub fn verifier_rows(n: usize, honest: bool) -> Vec<TrainingRow> {
    (0..n)
        .map(|i| {
            let right = i % 3 != 0;
            let sure = right == honest;
            let runs = [
                Run {
                    model: "small",
                    right,
                    cost: 1.0,
                    confidence: Some(if sure { 1.0 } else { 0.0 }),
                },
                Run {
                    model: "large",
                    right: true,
                    cost: 10.0,
                    confidence: None,
                },
            ];
            training_row(i, "chat", &runs)
        })
        .collect()
}

/// Rows whose small-model confidence takes three levels: at 0 the small model is wrong, at
/// 1 right, at 0.5 right on every other row; the large one is always right at 50 times the
/// cost. A calibrated policy on them keeps at 1 and escalates at 0.
pub fn three_level_rows(n: usize, task: &str) -> Vec<TrainingRow> {
    (0..n)
        .map(|i| {
            let p = [0.0, 0.5, 1.0][i % 3];
            let right = p == 1.0 || (p == 0.5 && i % 2 == 0);
            let runs = [
                Run {
                    model: "small",
                    right,
                    cost: 1.0,
                    confidence: Some(p),
                },
                Run {
                    model: "large",
                    right: true,
                    cost: 50.0,
                    confidence: None,
                },
            ];
            training_row(i, task, &runs)
        })
        .collect()
}

/// Rows where two signals each see half the story: the small model is right exactly when
/// its votes are high *and* its answer's own token probability is high; each signal alone
/// also passes answers the other would catch. The large model is always right at ten times
/// the cost.
pub fn two_signal_rows(n: usize, small: &str, large: &str) -> Vec<TrainingRow> {
    (0..n)
        .map(|i| {
            let votes = if i % 2 == 0 { 1.0 } else { 0.0 };
            let answer_p = if i % 4 < 2 || i % 7 == 0 { 0.9 } else { 0.2 };
            let right = votes > 0.5 && answer_p > 0.5;
            let runs = [
                Run {
                    model: small,
                    right,
                    cost: 1e-6,
                    confidence: Some(votes),
                },
                Run {
                    model: large,
                    right: true,
                    cost: 1e-5,
                    confidence: None,
                },
            ];
            let mut row = training_row(i, "general", &runs);
            if let Some(v) = row.models[0].verification.as_mut() {
                v.signals.insert("answer_logprob".into(), answer_p);
            }
            row
        })
        .collect()
}

/// Rows of a three-model chain on one task: `tiny` (verified; `signal(i)` gives its
/// confidence and whether it is right), `mid` (always right, confidence 0.9) and `big`
/// (always right), at 1e-6, 5e-5 and 1e-4 per answer.
pub fn chain_rows(n: usize, signal: impl Fn(usize) -> (f64, bool)) -> Vec<TrainingRow> {
    (0..n)
        .map(|i| {
            let (confidence, right) = signal(i);
            let runs = [
                Run {
                    model: "tiny",
                    right,
                    cost: 1e-6,
                    confidence: Some(confidence),
                },
                Run {
                    model: "mid",
                    right: true,
                    cost: 5e-5,
                    confidence: Some(0.9),
                },
                Run {
                    model: "big",
                    right: true,
                    cost: 1e-4,
                    confidence: None,
                },
            ];
            training_row(i, "mmlu", &runs)
        })
        .collect()
}

/// One model of [`chain_rows_of`]: its name, its skill (log-odds of a right answer at
/// difficulty 0) and its money per answer.
pub struct ChainModel {
    pub name: &'static str,
    pub skill: f64,
    pub cost: f64,
}

/// `tiny` → `mid` → `big` (1e-6, 2e-5, 1e-4 per answer).
pub const THREE_MODEL_CHAIN: [ChainModel; 3] = [
    ChainModel {
        name: "tiny",
        skill: -0.5,
        cost: 1e-6,
    },
    ChainModel {
        name: "mid",
        skill: 0.3,
        cost: 2e-5,
    },
    ChainModel {
        name: "big",
        skill: 2.5,
        cost: 1e-4,
    },
];

/// Four models priced like a mini → 32B → 72B → frontier chain.
pub const FOUR_MODEL_CHAIN: [ChainModel; 4] = [
    ChainModel {
        name: "mini",
        skill: 0.6,
        cost: 4e-4,
    },
    ChainModel {
        name: "m32b",
        skill: 0.9,
        cost: 1.2e-3,
    },
    ChainModel {
        name: "m72b",
        skill: 1.2,
        cost: 2e-3,
    },
    ChainModel {
        name: "frontier",
        skill: 1.5,
        cost: 6e-3,
    },
];

/// [`chain_rows_of`] over [`THREE_MODEL_CHAIN`], noise 0.1, no mass at 1.0.
pub fn continuous_chain_rows(n: usize) -> Vec<TrainingRow> {
    let signal = ChainSignal {
        noise: 0.1,
        top_mass: 0.0,
    };
    chain_rows_of(n, &THREE_MODEL_CHAIN, signal, 0)
}

/// How [`chain_rows_of`]'s verified models report their confidence.
#[derive(Clone, Copy)]
pub struct ChainSignal {
    /// Width of the uniform noise on the probability of a right answer.
    pub noise: f64,
    /// Share of answers reported at exactly 1.0 (1.5× as often for a right answer, 0.5×
    /// for a wrong one), as logprob confidences pile up there; the rest stay below 1.
    pub top_mass: f64,
}

/// Rows of a chain of `models` (cheapest first, verification a tenth of an answer's cost)
/// over five tasks: each query has a difficulty, each model is right with a probability
/// falling with it, and every model but the last reports a confidence as `signal` says
/// (that probability plus noise, or 1.0). Seeded by `seed`.
pub fn chain_rows_of(
    n: usize,
    models: &[ChainModel],
    signal: ChainSignal,
    seed: u64,
) -> Vec<TrainingRow> {
    // SplitMix64 draws in [0, 1) per (row, stream).
    let u = |i: usize, k: u64| {
        let mut z = (((i as u64) << 8 | k) ^ (seed << 40)).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let tasks = ["math", "code", "qa", "mcq", "gen"];
    let below_top = if signal.top_mass > 0.0 { 0.999 } else { 1.0 };
    (0..n)
        .map(|i| {
            let difficulty = 4.0 * u(i, 0) - 2.0;
            let runs: Vec<Run<'_>> = (models.iter().enumerate())
                .map(|(j, m)| {
                    let k = j as u64 + 1;
                    let p = 1.0 / (1.0 + (difficulty - m.skill).exp());
                    let right = u(i, k) < p;
                    let lean = if right { 1.5 } else { 0.5 };
                    let confidence = if u(i, 20 + k) < signal.top_mass * lean {
                        1.0
                    } else {
                        (p + signal.noise * (u(i, 10 + k) - 0.5)).clamp(0.0, below_top)
                    };
                    Run {
                        model: m.name,
                        right,
                        cost: m.cost,
                        confidence: (j + 1 < models.len()).then_some(confidence),
                    }
                })
                .collect();
            training_row(i, tasks[i % tasks.len()], &runs)
        })
        .collect()
}

/// The settings [`agreement_chain_rows`] are meant for (no discount, so a two-step path is
/// worth its quality).
pub const AGREEMENT_CHAIN_CONFIG: &str =
    "automix:\n  cost_lambda: 0.5\n  discount_factor: 1.0\nhparam:\n  verifier_signal: samples\n";

/// Rows of a `tiny` → `mid` → `big` chain (1e-6, 1e-5, 1e-4 per answer) where neither
/// verifier says anything (votes 0.5) but `mid` is right exactly when its answer ("B")
/// agrees with a right `tiny` ("B"; wrong answers are "A" and "C"): each is right on half
/// the rows, independently.
pub fn agreement_chain_rows(n: usize) -> Vec<TrainingRow> {
    (0..n)
        .map(|i| {
            let (tiny_right, mid_right) = (i % 2 == 0, (i / 2) % 2 == 0);
            let run = |model, right, cost, confidence| Run {
                model,
                right,
                cost,
                confidence,
            };
            let runs = [
                run("tiny", tiny_right, 1e-6, Some(0.5)),
                run("mid", mid_right, 1e-5, Some(0.5)),
                run("big", true, 1e-4, None),
            ];
            let mut row = training_row(i, "general", &runs);
            let answers = [
                if tiny_right { "B" } else { "A" },
                if mid_right { "B" } else { "C" },
                "B",
            ];
            for (m, answer) in row.models.iter_mut().zip(answers) {
                m.normalised_answer = answer.into();
            }
            row
        })
        .collect()
}
