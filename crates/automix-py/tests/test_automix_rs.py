"""automix_rs as its users use it: the seed's LLMRouter examples with only the import line
changed, the notebook core, errors, the GIL and Ctrl-C. Run by `cargo xtask pytest` against
the wheel installed in a fresh venv."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

import automix_rs
from automix_rs import AutomixRouter, AutomixTrainer
from conftest import training_rows

LLMROUTER_KEYS = {"model_name", "response", "verification_score", "route_to_llm"}
OUR_KEYS = {"decision", "models_tried", "cost", "steps", "calls"}


def trained(project):
    train_yaml, test_yaml = project
    router = AutomixRouter(yaml_path=str(train_yaml))
    trainer = AutomixTrainer(router=router, device="cpu")
    summary = trainer.train()
    return summary, AutomixRouter(yaml_path=str(test_yaml))


def test_the_seed_training_example_trains_and_saves_a_policy(project):
    summary, _ = trained(project)
    policy_path = summary["policy_path"]
    assert os.path.exists(policy_path)
    assert summary["small_model"] == "qwen2.5-coder-0.5b"
    assert summary["rows"] == 225  # the rows of split "train"
    policy = automix_rs.Policy.load(policy_path)
    assert policy.large_model == "qwen2.5-coder-1.5b"
    assert policy.decide(1.0) in ("keep", "escalate")


def test_route_single_returns_llmrouter_keys_and_ours_each_once(project):
    _, router = trained(project)
    result = router.route_single({"query": "What is the capital of France?"})
    assert LLMROUTER_KEYS | OUR_KEYS <= set(result)
    assert result["model_name"] == "qwen2.5-coder-0.5b"
    assert result["response"] == "Paris"
    assert result["verification_score"] == 1.0
    assert result["route_to_llm"] is False
    assert result["decision"] == "keep"
    assert result["task"] == "general"


def test_route_batch_scores_ground_truth_and_escalates_a_wrong_answer(project):
    _, router = trained(project)
    queries = [json.loads(l) for l in (project[1].parent / "queries.jsonl").read_text().splitlines()]
    results = router.route_batch(batch=queries, task_name="general")
    assert [r["response"] for r in results] == ["Paris", "Berlin", "Rome"]
    germany = results[1]
    assert germany["verification_score"] == 0.0
    assert germany["route_to_llm"] is True and germany["decision"] == "escalate"
    assert germany["models_tried"] == ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    assert all(r["task_performance"] == 1.0 for r in results)
    # Without a batch: the config's query_data_test.
    assert [r["response"] for r in router.route_batch()] == ["Paris", "Berlin", "Rome"]


def test_python_and_the_cli_choose_the_same_models(project):
    binary = os.environ.get("AUTOMIX_BIN")
    if not binary:
        pytest.skip("AUTOMIX_BIN (the automix binary) is not set; cargo xtask pytest sets it")
    _, router = trained(project)
    test_yaml = project[1]
    out = subprocess.run(
        [binary, "-c", str(test_yaml), "--json", "route", "--batch", str(test_yaml.parent / "queries.jsonl")],
        capture_output=True, text=True, check=True,
    )
    cli = [json.loads(l) for l in out.stdout.splitlines()]
    py = router.route_batch()
    assert [r["model_name"] for r in py] == [r["model_name"] for r in cli]
    assert [r["decision"] for r in py] == [r["decision"] for r in cli]
    assert set(py[0]) == set(cli[0]), "one JSON shape"


def test_the_notebook_core_trains_decides_and_evaluates(project):
    rows = training_rows()
    train = [r for r in rows if r["split"] == "train"]
    yaml = str(project[0])
    policy = automix_rs.train_policy(iter(train), yaml_path=yaml)
    assert (policy.small_model, policy.large_model) == ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
    assert policy.decide(1.0) == "keep" and policy.decide(0.0) == "escalate"
    assert policy.trained_lambda is not None
    assert len(policy.lambdas) > 3
    low, high = policy.lambdas[0]["lambda"], policy.lambdas[-1]["lambda"]
    assert policy.decide_at(0.0, min(low, high)) in ("keep", "escalate")
    assert policy.decide(None) == "escalate"  # unknown verdict: the policy's rule
    lines = automix_rs.evaluate(rows, yaml_path=yaml, frame=False)
    names = [l["name"] for l in lines]
    assert "auto" in names and "always-large" in names
    report = automix_rs.evaluate_rows(rows, yaml_path=yaml)
    assert report["test_rows"] > 0 and report["frontier"]
    # The rows carry one signal (verdict votes): one line, its calibration, both methods.
    (votes,) = automix_rs.compare_signals(rows, resplits=2, yaml_path=yaml)
    assert votes["signal"] == "samples" and votes["calibration"]["auc"] > 0.5
    assert votes["threshold"]["name"] == "Threshold" and len(votes["method"]["per_split"]) == 2
    with pytest.raises(automix_rs.ConfigError, match="resplits: at least 1 re-split"):
        automix_rs.compare_signals(rows, resplits=0)


def test_errors_are_python_exceptions_naming_file_line_and_field(tmp_path):
    with pytest.raises(automix_rs.ConfigError, match="missing.yaml"):
        AutomixRouter(yaml_path=str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("hparam:\n  routing_metod: auto\n")
    with pytest.raises(automix_rs.ConfigError, match=r"bad\.yaml:2.*routing_method"):
        AutomixRouter(yaml_path=str(bad))
    ok = tmp_path / "ok.yaml"
    ok.write_text("{}\n")
    with pytest.raises(automix_rs.ConfigError, match="cpu"):
        AutomixTrainer(router=AutomixRouter(yaml_path=str(ok)), device="cuda")
    with pytest.raises(automix_rs.DataError, match="row 1"):
        automix_rs.train_policy([{"id": "x"}])
    assert issubclass(automix_rs.UpstreamError, automix_rs.AutomixError)


def test_a_query_without_text_is_a_data_error(project):
    _, router = trained(project)
    with pytest.raises(automix_rs.DataError, match="query 1: field `query` is missing"):
        router.route_single({"question": "no query key"})


def test_routing_releases_the_gil_and_ctrl_c_cancels_a_batch(project):
    _, router = trained(project)
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    # A shell without job control starts background jobs with SIGINT ignored, and Python
    # then keeps it ignored: install Python's own handler, as a terminal session has it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    counter = threading.Thread(target=count)
    counter.start()
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            router.route_batch(batch=[{"query": f"Answer slowly {i}: capital of France?"} for i in range(8)])
    finally:
        # Also on failure: a counter left running would keep pytest from exiting.
        stop.set()
        counter.join()
        signal.signal(signal.SIGINT, previous)
    # Cancelled, not finished: each of those queries would take 30 s upstream.
    assert time.monotonic() - started < 20
    # Another Python thread ran while the batch was routing (the GIL was released).
    assert len(ticks) > 100
    # The router still works after the cancelled batch.
    assert router.route_single({"query": "What is the capital of Italy?"})["response"] == "Rome"
