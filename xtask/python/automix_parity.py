"""Golden outputs of the paper's own code (PyPI automix-llm 1.0.3) for automix-rs parity tests.

Run through `cargo xtask parity` (which builds the venv with pinned packages). Writes one
JSON file holding, per scenario: the rows (seeded synthetic data), and per method the
full candidate table (param -> IBC lift, in the code's own order), the chosen parameter
and the train/test evaluation. `--bench` instead times `Automix.train` on 1k/10k rows.
"""
import argparse
import json
import math
import sys
import time

import numpy as np
import pandas as pd
from automix import Automix
from automix.automix_methods import (
    DoubleThreshold, GreedyPOMDP, POMDP, POMDPSimple, SelfConsistency, Threshold, TripleThreshold,
)

METHODS = {
    "Threshold": Threshold,
    "DoubleThreshold": DoubleThreshold,
    "TripleThreshold": TripleThreshold,
    "SelfConsistency": SelfConsistency,
    "POMDPSimple": POMDPSimple,
    "GreedyPOMDP": GreedyPOMDP,
    "POMDP": POMDP,
}
UNION = ["POMDPSimple", "GreedyPOMDP", "DoubleThreshold", "Threshold"]


def category(s, l):
    # Same rule as automix_core::Category::paper_label.
    if l > s:
        return "NEEDY"
    if s > l or s > 0:
        return "GOOD"
    return "HOPELESS"


def make_rows(rng, n, kind, num_bins, large_better=True, informative=1.0):
    rows = []
    for _ in range(n):
        if kind == "binary":
            small = float(rng.random() < 0.45)
            if large_better:
                large = float(rng.random() < 0.75) if small == 0 else float(rng.random() < 0.9)
            else:
                large = float(rng.random() < 0.2) if small == 0 else float(rng.random() < 0.5)
        else:  # continuous F1-like scores with ties at 0 and 1
            small = float(np.clip(rng.beta(0.8, 0.9) if rng.random() < 0.8 else rng.integers(0, 2), 0, 1))
            large = float(np.clip(small + rng.normal(0.15 if large_better else -0.1, 0.3), 0, 1))
            if rng.random() < 0.2:
                large = small
        good = small >= 0.5
        if kind == "binary":
            k = num_bins
            q = 0.5 + informative * (0.3 if good else -0.25)
            p = float(rng.binomial(k, q)) / k
        else:
            p = float(np.clip(rng.normal(0.5 + informative * (0.25 if good else -0.2), 0.22), 0, 1))
            if rng.random() < 0.15:  # exact grid points exercise the float quirks of the bins
                # (half-grid points are avoided: the paper code crashes on some, see PARITY.md)
                p = float(rng.integers(0, num_bins + 1)) / num_bins
        rows.append({"small": small, "large": large, "p": p, "category": category(small, large),
                     "split": "train" if rng.random() < 0.6 else "test"})
    return rows


def scenarios():
    rng = np.random.default_rng(20241122)
    return [
        dict(name="binary_k8", num_bins=8, costs=[1, 50], verifier_cost=1, cost_constraint=None,
             rows=make_rows(rng, 600, "binary", 8)),
        dict(name="continuous_10bins", num_bins=10, costs=[1, 50], verifier_cost=1, cost_constraint=None,
             rows=make_rows(rng, 800, "continuous", 10)),
        dict(name="weak_verifier_16bins", num_bins=16, costs=[1, 20], verifier_cost=0.5, cost_constraint=None,
             rows=make_rows(rng, 700, "continuous", 16, informative=0.2)),
        dict(name="binary_k4_constrained", num_bins=4, costs=[1, 50], verifier_cost=1, cost_constraint=[2, 20],
             rows=make_rows(rng, 500, "binary", 4)),
        dict(name="continuous_20bins_cheap_verifier", num_bins=20, costs=[2, 30], verifier_cost=0, cost_constraint=None,
             rows=make_rows(rng, 900, "continuous", 20)),
        dict(name="large_not_better", num_bins=8, costs=[1, 50], verifier_cost=1, cost_constraint=None,
             rows=make_rows(rng, 400, "binary", 8, large_better=False)),
    ]


def frame(rows):
    return pd.DataFrame({
        "llama13b_f1": [r["small"] for r in rows],
        "llama70b_f1": [r["large"] for r in rows],
        "p_ver_13b": [r["p"] for r in rows],
        "category": [r["category"] for r in rows],
    })


def plain(x):
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return num(float(x))
    return x


def num(v):
    v = float(v)
    return v if math.isfinite(v) else str(v)


def param_json(method, param):
    if method == "POMDP":
        x, i = param
        return {"component": UNION[i], "param": plain(x)}
    return plain(param)


def run_method(name, sc, train, test):
    method = METHODS[name](sc["num_bins"])
    am = Automix(method, costs=sc["costs"], verifier_cost=sc["verifier_cost"])
    # Replay Automix.train to keep every candidate's lift, in the code's own order.
    table = []
    for param in method.generate_points(train, verifier_column=am.verifier_column):
        to_retry = method.run(train, param, verifier_column=am.verifier_column)
        perf, cost = am.compute_performance_cost(train, to_retry)
        cc = sc["cost_constraint"]
        if cc is not None and (cost < cc[0] or cost > cc[1]):
            continue
        slope, slm_perf, _ = am.get_slm_llm_slope_perf(train)
        with np.errstate(all="ignore"):
            lift = ((perf - slm_perf) / (cost - sc["costs"][0]) - slope) / slope
        table.append({"param": param_json(name, param), "lift": num(lift), "perf": num(perf), "cost": num(cost)})
    try:
        am.train(train, cost_constraint=sc["cost_constraint"])
    except ValueError as e:  # no candidate met cost_constraint: max() of an empty dict
        return {"error": str(e), "candidates": table}
    out = {"best_param": param_json(name, am.best_param), "candidates": table}
    for split, df in (("train", train), ("test", test)):
        with np.errstate(all="ignore"):
            r = am.evaluate(df, return_dict=True)
        out[split] = {k: num(r[k]) for k in ("ibc_lift", "avg_performance", "avg_cost")}
    return out


def golden(out_path):
    result = {"generator": "xtask/python/automix_parity.py", "automix_llm": "1.0.3",
              "numpy": np.__version__, "pandas": pd.__version__, "scenarios": []}
    for sc in scenarios():
        train = frame([r for r in sc["rows"] if r["split"] == "train"])
        test = frame([r for r in sc["rows"] if r["split"] == "test"])
        methods = {name: run_method(name, sc, train, test) for name in METHODS}
        result["scenarios"].append({k: sc[k] for k in ("name", "num_bins", "costs", "verifier_cost", "cost_constraint", "rows")}
                                   | {"methods": methods})
        print(f"{sc['name']}: " + ", ".join(f"{m}={v.get('best_param', v.get('error'))!s:.40}" for m, v in methods.items()), file=sys.stderr)
    with open(out_path, "w") as f:
        json.dump(result, f, separators=(",", ":"))


def bench_rows(n):
    """Same rows as `bench_rows` in crates/automix-core/benches/core.rs."""
    def h(i, k):
        return ((i * 2654435761 + k * 97531) % 1000003) % 100
    rows = []
    for i in range(n):
        votes = h(i, 1) % 9
        small = 1.0 if h(i, 2) < 25 + 6 * votes else 0.0
        large = 1.0 if h(i, 3) < 85 else 0.0
        rows.append({"small": small, "large": large, "p": votes / 8, "category": category(small, large)})
    return rows


def bench(sizes, repeats):
    out = {}
    for n in sizes:
        df = frame(bench_rows(n))
        for name in METHODS:
            best = math.inf
            for _ in range(repeats):
                am = Automix(METHODS[name](8))
                t0 = time.perf_counter()
                am.train(df)
                best = min(best, time.perf_counter() - t0)
            out[f"{name}/{n}"] = best
            print(f"python {name}/{n}: {best * 1e3:.2f} ms", file=sys.stderr)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if a.bench:
        bench([int(s) for s in a.sizes.split(",")], a.repeats)
    else:
        golden(a.out)
