"""The ``fraudstack`` command: one subcommand per role.

Each role lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
only the chosen role's module is imported, so ``fraudstack serve`` never loads the
training libraries and ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from fraudstack.errors import FraudstackError

# subcommand -> (module, one-line help)
ROLES: dict[str, tuple[str, str]] = {
    "devstack": (
        "fraudstack.devstack.cli",
        "start, stop or inspect the local stack of real servers",
    ),
    "simulate": ("fraudstack.simulate", "simulate card transactions (Fraud Detection Handbook)"),
    "ingest": ("fraudstack.ingest.cli", "HTTP ingestion API, or replay a Parquet file into Kafka"),
    "aggregate": (
        "fraudstack.aggregate.cli",
        "stream transactions and labels into online features",
    ),
    "snapshot": ("fraudstack.snapshot.cli", "write the streams to the Parquet offline store"),
    "features": ("fraudstack.offline_features", "compute every feature offline for a table"),
    "train": ("fraudstack.train.cli", "train, evaluate and register a model"),
    "serve": ("fraudstack.serve.cli", "the inference service (gunicorn + uvicorn workers)"),
    "check-consistency": ("fraudstack.consistency", "compare online and offline features"),
    "demo": ("fraudstack.demo", "run the whole pipeline end to end"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the module of ``command`` (the chosen role) is imported."""
    parser = argparse.ArgumentParser(prog="fraudstack", description=__doc__.splitlines()[0])
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in ROLES.items():
        sub = subcommands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        if name != command:
            continue
        module = _import_role(module_name)
        if module is None:
            sub.set_defaults(_missing=True)
        else:
            module.add_arguments(sub)
    return parser


def _import_role(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None  # that role is not built yet
        raise


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in arguments if not word.startswith("-")), None)
    args = build_parser(command).parse_args(arguments)
    if getattr(args, "_missing", False):
        print(f"fraudstack {args.command}: not built yet", file=sys.stderr)
        return 2
    module = importlib.import_module(args._module)
    try:
        code: int = module.run(args)
    except FraudstackError as exc:
        print(f"fraudstack {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
