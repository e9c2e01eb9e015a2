"""The model of the inference benchmark: trained as ``fraudstack train`` does, and timed."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from fraudstack.adapters.registry import ModelRegistry


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare_model(
    table: Any, registry_root: str, model_name: str, rows: int, seed: int
) -> tuple[str, Any, np.ndarray, dict[str, float]]:
    """Train as ``fraudstack train`` does and publish; ``auto`` picks its default candidates'
    best by validation average precision (the last week, after a one-week gap)."""
    from sklearn.metrics import average_precision_score

    from fraudstack.features.definitions import FEATURE_NAMES, MS_PER_DAY
    from fraudstack.features.offline import compute_features
    from fraudstack.train.export import check_equivalence, publish_model, to_onnx
    from fraudstack.train.models import DEFAULT_MODELS, fit

    features = compute_features(table)
    matrix = np.column_stack([features[name].to_numpy() for name in FEATURE_NAMES])
    target = np.asarray(table["is_fraud"].to_numpy(zero_copy_only=False), dtype=np.int64)
    day = (table["ts"].to_numpy() - int(table["ts"][0].as_py())) // MS_PER_DAY
    last_day = int(day.max())
    rng = np.random.default_rng(seed)
    train = np.flatnonzero(day < last_day - 13)
    valid = np.flatnonzero(day > last_day - 7)
    if len(np.unique(target[train])) < 2:
        raise SystemExit(
            f"{last_day + 1} days of transactions leave too little to train on (the last two "
            "weeks are the gap and the validation week): simulate more days (--days)"
        )
    train = rng.choice(train, size=min(rows, len(train)), replace=False)
    candidates = list(DEFAULT_MODELS) if model_name == "auto" else [model_name]
    fitted: dict[str, Any] = {}
    precision: dict[str, float] = {}
    for name in candidates:
        say(f"training {name} on {len(train):,} transactions")
        fitted[name] = fit(name, matrix[train], target[train], seed=seed, jobs=2)
        score = fitted[name].predict_proba(matrix[valid])[:, 1]
        precision[name] = round(float(average_precision_score(target[valid], score)), 4)
        say(f"{name}: validation average precision {precision[name]}")
    chosen = max(precision, key=lambda name: precision[name])
    model = fitted[chosen]
    onnx_model = to_onnx(model, len(FEATURE_NAMES))
    check = matrix[rng.choice(len(matrix), size=min(5_000, len(matrix)), replace=False)]
    difference = check_equivalence(model, onnx_model, check)
    version = f"bench-{chosen.replace('_', '-')}"
    publish_model(
        registry_root,
        version,
        chosen,
        model,
        onnx_model=onnx_model,
        metrics={"onnx_max_abs_diff": difference, "validation_average_precision": precision},
        extra={"rows": len(train)},
    )
    return version, model, check, precision


def existing_model(registry_root: str, version: str, table: Any) -> tuple[Any, np.ndarray]:
    import joblib

    from fraudstack.features.definitions import FEATURE_NAMES
    from fraudstack.features.offline import compute_features

    registry = ModelRegistry(registry_root)
    registry.verify(version)
    model = joblib.load(registry.path(version) / "model.joblib")
    sample = compute_features(table.slice(0, 5_000))
    return model, np.column_stack([sample[name].to_numpy() for name in FEATURE_NAMES])


#: Swept between two calls of a "cold" timing: twice a core's L2 cache here, as the rest of a
#: request (HTTP, Redis, JSON, other processes) does between two requests of an idle worker.
SWEEP_BYTES = 8 * 2**20


def model_eval(registry_root: str, version: str, model: Any, rows: np.ndarray) -> dict[str, Any]:
    """Median single-row evaluation time on the same rows: ours (the engine the service uses),
    onnxruntime on the same ONNX graph, and scikit-learn; warm (back to back) and cold (with
    the caches swept before each call)."""
    from fraudstack.scoring import ONNX_FILE, Scorer, load_scorer

    scorer = load_scorer(registry_root, version)
    onnx_only = Scorer(
        (ModelRegistry(registry_root).path(version) / ONNX_FILE).read_bytes(), scorer.metadata
    )
    vectors = [row.tolist() for row in rows[:1_000]]
    sweep = np.zeros(SWEEP_BYTES // 8)

    def median_us(score: Any, repeats: int, cold: bool = False) -> float:
        times = []
        for index in range(repeats):
            vector = vectors[index % len(vectors)]
            if cold:
                sweep[:] += 1.0
            started = time.perf_counter()
            score(vector)
            times.append(time.perf_counter() - started)
        return round(statistics.median(times) * 1e6, 2)

    for vector in vectors[:200]:  # warm every one
        scorer.score(vector)
        onnx_only.score(vector)
        model.predict_proba([vector])
    difference = max(
        abs(scorer.score(vector) - float(model.predict_proba([vector])[0, 1])) for vector in vectors
    )
    return {
        "engine": scorer.engine,
        "ours": median_us(scorer.score, 20_000),
        "ours_cold": median_us(scorer.score, 500, cold=True),
        "onnxruntime": median_us(onnx_only.score, 20_000),
        "onnxruntime_cold": median_us(onnx_only.score, 500, cold=True),
        "scikit_learn": median_us(lambda vector: model.predict_proba([vector]), 1_000),
        "max_abs_diff": difference,
        "cold_sweep_bytes": SWEEP_BYTES,
    }
