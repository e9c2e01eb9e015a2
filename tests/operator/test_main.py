"""``python -m fraudmodel_operator``: the command the operator image runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_help_answers_without_any_setting() -> None:
    # an image check runs `--help` with no Redis at hand: the settings must not be read first
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("FRAUDSTACK_")
    }
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "services"), str(ROOT / "operator"), environment.get("PYTHONPATH", "")]
    )
    done = subprocess.run(
        [sys.executable, "-m", "fraudmodel_operator", "--help"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m fraudmodel_operator")
    # every setting is listed, from the settings class itself
    for variable in ("FRAUDSTACK_REDIS_URL", "FRAUDSTACK_OPERATOR_NAMESPACE"):
        assert variable in done.stdout
