"""Rows with a continuous confidence at scale, for checking that pooling confidence levels
into quantile groups (crates/automix-core/src/calibrate/levels.rs) costs no quality.

Each development-set row (data/anlp) is written `--copies` times with a synthetic logprob
`1/(1+e^(-2z))`, `z ~ N(0.9*(score-0.5) + 0.6*(p_ver-0.5), 1)`, and a random half is train.

    python3 docs/continuous_rows.py > /tmp/rows.jsonl
"""

import argparse
import json
import math
import random
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="data/anlp/routing_rows_llama8b_gpt5.jsonl")
    parser.add_argument("--copies", type=int, default=25)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with open(args.rows, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    for copy in range(args.copies):
        for row in rows:
            out = json.loads(json.dumps(row))
            out["id"] = f"{row['id']}-{copy}"
            small = out["models"][0]
            verification = small["verification"]
            z = rng.gauss(0.9 * (small["score"] - 0.5) + 0.6 * (verification["p_ver"] - 0.5), 1.0)
            verification["logprob_p"] = round(1 / (1 + math.exp(-2 * z)), 9)
            verification["logprob_source"] = "logprobs"
            out["split"] = "train" if rng.random() < 0.5 else "test"
            sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
