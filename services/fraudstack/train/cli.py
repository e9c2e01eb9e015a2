"""``fraudstack train``: train, evaluate and register a model.

    fraudstack train [--store URI] [--registry URI] [--end YYYY-MM-DD] [--train-days 7] ...
    fraudstack train --protocol handbook [--seeds 0-4] [--results bench/results] [--folds 4]
    fraudstack train [--protocol handbook] --events PATH ...

The default protocol reads the offline store, compares the candidates on a validation window
and publishes the best one as ``models/<version>/`` in the registry; it prints the version on
the last line of stdout. ``--protocol handbook`` runs the Fraud Detection Handbook's protocol on
the book's simulation of each seed of ``--seeds`` (default: ``--seed``) and writes each metric
per seed and as mean ± standard deviation, beside the book's figures, to ``model_quality.md``,
``model_quality.json`` and ``model_quality.png`` (PR curves, per-seed spread).

``--events PATH`` takes the transactions from a table in the simulator's schema (Parquet file or
folder, or CSV; see :mod:`fraudstack.train.events` and the README) instead of the offline store
or the simulation: the handbook protocol then tests on the table's last week, the store
protocol trains and validates on the weeks before the table's last one. A table that cannot be
used (a missing column, a wrong type, too few days, a period without frauds) stops the command
with one line naming the problem (exit code 1).

Settings: ``FRAUDSTACK_OFFLINE_STORE_URI`` and ``FRAUDSTACK_MODEL_REGISTRY_URI`` (see
:mod:`fraudstack.settings`); the flags win over them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from fraudstack.train.models import DEFAULT_MODELS, HANDBOOK_MODELS, MODELS
from fraudstack.train.selection import ALL_METRICS, RULES

if TYPE_CHECKING:
    from fraudstack.train.seeds import SeedsRun


def _models(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MODELS)}"
        )
    return names


def _seeds(text: str) -> list[int]:
    from fraudstack.train.seeds import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protocol",
        choices=("store", "handbook"),
        default="store",
        help="store: train from the offline store and register (default); "
        "handbook: the book's evaluation protocol on its simulation",
    )
    parser.add_argument(
        "--models",
        type=_models,
        default=None,
        help=f"comma-separated candidates (default {','.join(DEFAULT_MODELS)}; "
        f"handbook: {','.join(HANDBOOK_MODELS)})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="CPU cores for the forest")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--events",
        metavar="PATH",
        help="a transaction table in the simulator's schema (Parquet file or folder, or CSV) "
        "instead of the offline store or the simulation",
    )
    store = parser.add_argument_group("store protocol")
    store.add_argument("--store", metavar="URI", help="offline store root")
    store.add_argument("--registry", metavar="URI", help="model registry root")
    store.add_argument(
        "--end",
        type=date.fromisoformat,
        help="first day after the validation window (default: newest label report minus the delay)",
    )
    store.add_argument(
        "--as-of",
        type=date.fromisoformat,
        help="use only labels reported before this day (default: all)",
    )
    store.add_argument("--train-days", type=int, default=7)
    store.add_argument("--delay-days", type=int, default=7)
    store.add_argument("--valid-days", type=int, default=7)
    store.add_argument(
        "--select-by",
        choices=RULES,
        default=ALL_METRICS,
        help="how to pick among several --models: 'all' (default) ranks them on the three "
        "validation metrics and takes the lowest sum of ranks; a metric picks on it alone",
    )
    store.add_argument(
        "--genuine-fraction",
        type=float,
        default=1.0,
        help="keep this share of genuine training transactions (all frauds)",
    )
    handbook = parser.add_argument_group("handbook protocol")
    handbook.add_argument("--folds", type=int, default=4, help="prequential validation folds")
    handbook.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        metavar="SEEDS",
        help="simulator seeds, a range or a list: 0-4, 0,3,7 (default: --seed)",
    )
    handbook.add_argument(
        "--keep-seeds",
        metavar="FOLDER",
        help="save each seed's run in FOLDER as it finishes and reuse those already there "
        "(resume a long run, or split its seeds across processes)",
    )
    handbook.add_argument(
        "--tune",
        action="store_true",
        help="choose the blend's smallest forest leaf and forest weight by prequential "
        "validation over --seeds (the test weeks are not read) and write blend_tuning.md/.json "
        "instead of running the protocol; --keep-seeds keeps its fits' predictions too",
    )
    handbook.add_argument(
        "--results",
        default="bench/results",
        metavar="FOLDER",
        help="where model_quality.md/.json go (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    progress = not args.no_progress
    if args.protocol == "handbook":
        return _handbook(args, progress)

    from fraudstack.adapters.offline_store import OfflineStore, epoch_ms
    from fraudstack.settings import get_settings
    from fraudstack.train.job import plan_window, train_and_register

    settings = get_settings()
    registry = args.registry or settings.model_registry_uri
    as_of_ms = epoch_ms(args.as_of) - 1 if args.as_of else None
    events = None
    if args.events:
        from fraudstack.train.dataset import build
        from fraudstack.train.events import read_events

        table = read_events(args.events)
        if as_of_ms is None:  # the table's labels are all known now
            as_of_ms = int(max(table.column("ts").to_numpy()))
        else:
            table = table.filter(table.column("ts").to_numpy() <= as_of_ms)
        events = build(table, progress=progress)
        store_uri = args.events
    else:
        store_uri = args.store or settings.offline_store_uri
    window = plan_window(
        OfflineStore(store_uri) if events is None else None,
        args.end,
        as_of_ms,
        args.train_days,
        args.delay_days,
        args.valid_days,
    )
    version, metrics = train_and_register(
        store_uri,
        registry,
        window,
        models=args.models or DEFAULT_MODELS,
        select_by=args.select_by,
        seed=args.seed,
        jobs=args.jobs,
        genuine_fraction=args.genuine_fraction,
        progress=progress,
        events=events,
    )
    validation = metrics["validation"]
    print(
        f"published {version} to {registry}: validation AUC ROC "
        f"{validation['auc_roc']:.3f}, AP {validation['average_precision']:.3f}, "
        f"CP@100 {validation['card_precision_at_100']:.3f}"
    )
    print(version)
    return 0


def _handbook(args: argparse.Namespace, progress: bool) -> int:
    from fraudstack.train import report
    from fraudstack.train.plots import model_quality_png
    from fraudstack.train.seeds import run_seeds

    seeds = args.seeds if args.seeds is not None else [args.seed]
    if args.tune:
        return _tune(args, seeds, progress)
    models = args.models or HANDBOOK_MODELS
    if args.events:
        outcome = _handbook_on_events(args.events, models, seeds, args.folds, args.jobs, progress)
    else:
        outcome = run_seeds(
            models=models,
            seeds=seeds,
            folds=args.folds,
            jobs=args.jobs,
            progress=progress,
            keep=args.keep_seeds,
        )
    results = outcome.report
    curves = {
        name: [run.test_scores[name] for run in outcome.runs]
        for name in outcome.runs[0].test_scores
    }
    spread = {
        entry["model"]: {metric: entry[metric]["per_seed"] for metric in report.METRICS}
        for entry in results["summary"]
    }
    picture = model_quality_png(curves, spread, results["book_bar"], seeds)
    print(report.table(results))
    print(report.per_seed_table(results))
    print(f"selected: {results['selected']}")
    for path in report.write(results, args.results, picture):
        print(f"wrote {path}")
    return 0


def _tune(args: argparse.Namespace, seeds: list[int], progress: bool) -> int:
    from fraudstack.train import tuning

    if args.events:
        raise SystemExit("--tune runs on simulated seeds; it does not take --events")
    cache = Path(args.keep_seeds) / "tuning" if args.keep_seeds else None
    result = tuning.tune(seeds, args.folds, cache=cache, jobs=args.jobs, progress=progress)
    print(tuning.markdown(result))
    for path in tuning.write(result, args.results):
        print(f"wrote {path}")
    return 0


def _handbook_on_events(
    path: str, models: Sequence[str], seeds: list[int], folds: int, jobs: int, progress: bool
) -> SeedsRun:
    """The handbook protocol on a user's table: the test week is its last; each seed is a new
    random state for the models on the same data."""
    import time

    from fraudstack.train.dataset import build
    from fraudstack.train.events import protocol_start, read_events
    from fraudstack.train.handbook import evaluate_dataset
    from fraudstack.train.seeds import SeedsRun, summarize

    table = read_events(path)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = build(table, progress=progress, timings=timings)
    timings["build_seconds"] = time.perf_counter() - started
    train_start = protocol_start(data, folds, path)
    description = f"{Path(path).name}: {len(data):,} transactions, {data.frauds:,} frauds"
    runs = [
        evaluate_dataset(
            data, description, models, folds, seed, jobs, progress, timings, train_start=train_start
        )
        for seed in seeds
    ]
    return SeedsRun(summarize(runs, seeds), runs, seeds)
