"""Single-row evaluation time of the default model, without the HTTP load of ``inference.py``.

The model is trained and published as ``fraudstack train`` does (the default candidates on a
simulated table, see :mod:`inference_model`), then one row at a time is scored by the engine
the service uses (the tree walker, with the blend's logistic term), by onnxruntime on the same
ONNX graph and by scikit-learn, warm (back to back) and cold (caches swept before each call).
The target: the service's engine scores a row in at most 50 µs. Prints Markdown and writes
``bench/results/model_eval.{md,json}`` (``--results`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fraudstack.simulate import SimulationConfig, simulate
from inference_model import model_eval, prepare_model, say

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_US = 50.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--train-rows", type=int, default=100_000)
    parser.add_argument("--model", default="auto", help="a model name, or auto: the default")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--results", default=str(RESULTS), help="where the results are written")
    args = parser.parse_args()

    config = SimulationConfig(
        customers=args.customers, terminals=2 * args.customers, days=args.days, seed=args.seed
    )
    say(f"simulating {args.customers:,} customers over {args.days} days")
    table = simulate(config)
    with tempfile.TemporaryDirectory(prefix="fraudstack-bench-model-") as registry_root:
        version, model, rows, precision = prepare_model(
            table, registry_root, args.model, args.train_rows, args.seed
        )
        say(f"timing single-row evaluation of {version}")
        evaluation = model_eval(registry_root, version, model, rows)
    trees = model.estimators_[0] if hasattr(model, "voting") else model
    result = {
        "model": version,
        "trees": len(getattr(trees, "estimators_", [])),
        "train_rows": args.train_rows,
        "validation_average_precision": precision,
        "target_us": TARGET_US,
        "meets_target": evaluation["ours"] <= TARGET_US,
        **evaluation,
    }
    lines = [
        f"# Single-row evaluation: {version} ({evaluation['engine']})",
        "",
        "Written by `python bench/model_eval.py`: median time to score one row, in µs (warm: "
        "back to back; cold: caches swept before each call). Target: ours ≤ 50 µs.",
        "",
        "| engine | warm µs | cold µs |",
        "|---|---:|---:|",
        f"| ours ({evaluation['engine']}) | {evaluation['ours']} | {evaluation['ours_cold']} |",
        f"| onnxruntime, same graph | {evaluation['onnxruntime']} | "
        f"{evaluation['onnxruntime_cold']} |",
        f"| scikit-learn predict_proba | {evaluation['scikit_learn']} | |",
        "",
        f"Largest |ours - scikit-learn| over 1,000 rows: {evaluation['max_abs_diff']:.2g}; "
        f"{'meets' if result['meets_target'] else 'MISSES'} the 50 µs target.",
        "",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    folder = Path(args.results)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_eval.md").write_text(markdown)
    (folder / "model_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
