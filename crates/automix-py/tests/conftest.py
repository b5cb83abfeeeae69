"""Shared fixtures: a scripted OpenAI-compatible upstream and a project directory whose
config points LLMRouter's example keys at it."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("AUTOMIX_ROOT", Path(__file__).resolve().parents[3]))
SMALL, LARGE = "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"

# What each model answers, by a word of the question; the small one is wrong on Germany.
ANSWERS = {
    "api-small": {"France": "Paris", "Germany": "Munich", "Italy": "Rome"},
    "api-large": {"France": "Paris", "Germany": "Berlin", "Italy": "Rome"},
}
RIGHT = {"Paris", "Berlin", "Rome"}


class Upstream(BaseHTTPRequestHandler):
    """Deterministic chat completions: answers by the table above, verdicts "Correct" for a
    right answer and "Incorrect" otherwise; a question with "slowly" waits 30 s."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        if isinstance(text, list):
            text = " ".join(p.get("text", "") for p in text)
        if "slowly" in text:
            time.sleep(30)
        n = body.get("n") or 1
        if "AI generated answer:" in text:
            answer = text.rsplit("AI generated answer:", 1)[1].split("\n", 1)[0].strip()
            reply = "Correct" if answer in RIGHT else "Incorrect"
        else:
            table = ANSWERS.get(body["model"], {})
            reply = next((a for k, a in table.items() if k in text), "I do not know")
        out = {
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": reply},
                 "finish_reason": "stop"}
                for i in range(n)
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        }
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:
            pass


@pytest.fixture(scope="session")
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def training_rows(n: int = 300) -> list[dict]:
    """Rows in the project's format where the small model's verdicts are informative: all
    "Correct" (p 1) and right, all "Incorrect" (p 0) and wrong, split 50/50 in between."""
    rows = []
    for i in range(n):
        p = (0.0, 0.5, 1.0)[i % 3]
        small_right = p == 1.0 or (p == 0.5 and i % 2 == 0)
        correct = round(4 * p)
        verification = {"samples": 4, "correct": correct, "incorrect": 4 - correct, "unparsed": 0,
                        "p_ver": p, "logprob_p": None, "logprob_source": "not asked", "tokens": {"prompt": 100, "completion": 4},
                        "cost": 1e-5}
        run = lambda model, score, cost, v=None: {
            "model": model, "answer": "a", "normalised_answer": "a", "score": score,
            "tokens": {"prompt": 50, "completion": 2}, "cost": cost, "latency_ms": 10,
            **({"verification": v} if v else {}),
        }
        rows.append({
            "id": f"general-{i}", "task_name": "general", "metric": "f1_score", "query": f"q{i}",
            "ground_truth": "a", "split": "train" if i % 4 else "test",
            "models": [run(SMALL, 1.0 if small_right else 0.0, 1e-6, verification),
                       run(LARGE, 1.0, 5e-5)],
        })
    return rows


def write_project(directory: Path, upstream: str) -> tuple[Path, Path]:
    """LLMRouter-style train and test configs in ``directory`` over :func:`training_rows`,
    the models at ``upstream``; returns (train yaml, test yaml)."""
    llm = {
        SMALL: {"size": "0.5B", "input_price": 0.1, "output_price": 0.1, "model": "api-small",
                "api_endpoint": upstream},
        LARGE: {"size": "1.5B", "input_price": 5.0, "output_price": 5.0, "model": "api-large",
                "api_endpoint": upstream},
    }
    (directory / "llm_data.json").write_text(json.dumps(llm))
    rows = directory / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in training_rows()))
    common = f"""
  llm_data: llm_data.json
hparam:
  routing_method: Calibrated
  per_task_prior: false
  verifier_signal: samples
  max_workers: 4
  device: cpu
automix:
  verification_samples: 4
"""
    train = directory / "automix_train.yaml"
    train.write_text(
        f"data_path:\n  routing_data_train: {rows}{common}"
        f"model_path:\n  save_model_path: policy.json\n  engine_small: {SMALL}\n  engine_large: {LARGE}\n"
    )
    test = directory / "automix_test.yaml"
    test.write_text(
        f"data_path:\n  query_data_test: queries.jsonl{common}"
        f"model_path:\n  load_model_path: policy.json\n  engine_small: {SMALL}\n  engine_large: {LARGE}\n"
    )
    queries = [
        {"task_name": "general", "query": f"What is the capital of {c}?", "ground_truth": a,
         "metric": "f1_score"}
        for c, a in [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome")]
    ]
    (directory / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    return train, test


@pytest.fixture()
def project(tmp_path, upstream):
    return write_project(tmp_path, upstream)
