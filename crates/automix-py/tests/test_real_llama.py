"""The seed's LLMRouter examples against the real local llama.cpp models, with only the
import line changed (run by `cargo xtask e2e` after `cargo xtask llms up`)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from automix_rs import AutomixRouter, AutomixTrainer, Policy  # was: from llmrouter.models import ...
from conftest import ROOT

CONFIG = ROOT / "configs" / "llmrouter_automix.yaml"

pytestmark = pytest.mark.skipif(
    os.environ.get("AUTOMIX_REQUIRE_LLMS") != "1",
    reason="needs the local models (cargo xtask e2e brings them up)",
)


def test_the_seed_examples_run_on_real_models_and_agree_with_the_cli():
    # Training example.
    router = AutomixRouter(yaml_path=str(CONFIG))
    trainer = AutomixTrainer(router=router, device="cpu")
    summary = trainer.train()
    policy = Policy.load(summary["policy_path"])

    # Inference example (the same YAML holds the saved policy's path).
    router = AutomixRouter(yaml_path=str(CONFIG))
    result = router.route_single({"query": "What is the capital of France?"})
    assert result["model_name"] in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
    assert result["response"].strip()
    assert {"verification_score", "route_to_llm", "decision", "models_tried", "cost"} <= set(result)

    queries = [json.loads(l) for l in (ROOT / "data" / "demo_queries.jsonl").read_text().splitlines()[:3]]
    results = router.route_batch(batch=queries, task_name="general")
    assert len(results) == 3
    for q, r in zip(queries, results):
        assert "task_performance" in r and r["task_performance"] is not None, q["query"][:40]
        # The decision is the policy's on the evidence the router saw.
        expected = policy.decide(r["verification_score"], task=r["task"])
        first = r["steps"][0]["decision"] if r["steps"] else None
        assert first == expected, (r["verification_score"], r["steps"])

    # The CLI on the same queries: wherever it saw the same verifier score, it made the
    # same choice (the local models sample verdicts, so scores may differ run to run).
    batch = ROOT / "target" / "py-e2e-queries.jsonl"
    batch.write_text("".join(json.dumps(q) + "\n" for q in queries))
    binary = os.environ["AUTOMIX_BIN"]
    out = subprocess.run([binary, "-c", str(CONFIG), "--json", "route", "--batch", str(batch)],
                         capture_output=True, text=True, check=True)
    cli = [json.loads(l) for l in out.stdout.splitlines()]
    same = [(p, c) for p, c in zip(results, cli) if p["verification_score"] == c["verification_score"]]
    for p, c in same:
        assert p["model_name"] == c["model_name"], (p["id"], p["verification_score"])
        assert p["decision"] == c["decision"]
    print(f"{len(same)} of {len(cli)} queries saw the same score from Python and the CLI")
