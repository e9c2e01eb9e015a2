"""Helpers shared by the Kubernetes bundle tests: paths, helm, manifests, API errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from fraudstack.paths import cache_dir

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fraudstack"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
CRDS = [
    CHART / "crds" / "fraudmodels.fraudstack.io.yaml",
    *sorted((Path(__file__).parent / "crds").glob("*.yaml")),
]
HELM_VERSION = "v3.19.0"  # keep in step with deploy/tools.sh

Manifest = list[dict[str, Any]]


class Helm:
    """The cached helm binary, with its own config folders and (optionally) a kubeconfig."""

    def __init__(self, binary: Path, home: Path, kubeconfig: str | None = None) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        if kubeconfig:
            self.env["KUBECONFIG"] = kubeconfig

    def run(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *arguments],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(arguments)} failed:\n{result.stderr}")
        return result

    def template(
        self, *values_files: Path, sets: Sequence[str] = (), release: str = "fraudstack"
    ) -> Manifest:
        arguments = ["template", release, str(CHART), "--namespace", "fraudstack"]
        for path in values_files:
            arguments += ["-f", str(path)]
        for assignment in sets:
            arguments += ["--set", assignment]
        return parse_manifest(self.run(*arguments).stdout)


def parse_manifest(text: str) -> Manifest:
    return [document for document in yaml.safe_load_all(text) if document]


def ensure_tools() -> Path:
    """The cached helm, installed by deploy/tools.sh when missing."""
    binary = cache_dir() / "bin" / f"helm-{HELM_VERSION}"
    if not os.access(binary, os.X_OK):
        subprocess.run(["bash", str(ROOT / "deploy" / "tools.sh")], check=True)
    return binary


def api_error_message(exc: client.ApiException) -> str:
    """The API server's own message from a refused request."""
    try:
        return str(json.loads(exc.body or "{}").get("message", exc.body))
    except (TypeError, ValueError):
        return str(exc.body)


def as_dict(value: object) -> dict[str, Any]:
    """A custom object as the client returns it (a dict, typed as object)."""
    assert isinstance(value, dict), type(value)
    return value


def which_promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: install the Debian package 'prometheus'")
    return found
