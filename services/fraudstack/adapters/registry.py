"""The model registry: one immutable folder per model version, checked by sha256.

Layout under the registry root (a local path, or a ``file://`` URI; the inference service
needs the files on local disk for onnxruntime, so remote registries are synced to a volume)::

    models/<version>/
      model.onnx        the exported model
      forest.npz        tree models only: the compact form the inference service walks
                        (:mod:`fraudstack.forest`); other models are run by onnxruntime
      model.joblib      the scikit-learn estimator (baselines, re-export)
      metadata.json     see :class:`ModelMetadata`
      pr_curve.png  score_hist.png

``metadata.json`` lists the sha256 of every other file; :meth:`ModelRegistry.verify` recomputes
them. Publishing stages the whole folder under a hidden name next to its final place, fsyncs it
and renames it: a reader sees a complete version or none, and a version, once published, never
changes (publishing it again is an error).

Only the standard library is imported here, so the slim inference image can verify models.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fraudstack.errors import ModelError, ModelIntegrityError, ModelNotFound

METADATA_FILE = "metadata.json"
MODELS_FOLDER = "models"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CHUNK = 1 << 20


@dataclass
class ModelMetadata:
    """What ``metadata.json`` holds."""

    version: str
    model_type: str
    feature_names: list[str]
    feature_set_version: str
    #: ``{"start": ISO date-time, "end": ISO date-time}`` of the transactions trained on.
    training_window: dict[str, str]
    metrics: dict[str, Any]
    #: file name -> sha256 (hex) of every file of the version but ``metadata.json``.
    files: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    #: Anything else worth keeping (hyper-parameters, candidates compared, row counts...).
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> ModelMetadata:
        try:
            data = json.loads(raw)
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise ModelIntegrityError(f"{where}: unreadable metadata.json: {exc}") from exc


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def new_version(now: datetime | None = None) -> str:
    """A sortable, unique version name: ``v<UTC date-time>-<random>``."""
    moment = now or datetime.now(UTC)
    return f"v{moment.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


class ModelRegistry:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        text = os.fspath(root)
        if text.startswith("file://"):
            text = text.removeprefix("file://")
        elif "://" in text:
            raise ModelError(f"model registry {text!r}: only local paths and file:// are served")
        self.root = Path(text)
        self.models = self.root / MODELS_FOLDER

    def path(self, version: str) -> Path:
        if not _VERSION.match(version):
            raise ModelNotFound(f"{version!r} is not a valid model version name")
        return self.models / version

    def versions(self) -> list[str]:
        """Published versions, oldest first (names sort by creation time)."""
        if not self.models.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.models.iterdir()
            if entry.is_dir() and _VERSION.match(entry.name) and (entry / METADATA_FILE).is_file()
        )

    def latest(self) -> str:
        versions = self.versions()
        if not versions:
            raise ModelNotFound(f"no model in the registry at {self.root}")
        return versions[-1]

    def metadata(self, version: str) -> ModelMetadata:
        folder = self.path(version)
        try:
            raw = (folder / METADATA_FILE).read_bytes()
        except FileNotFoundError as exc:
            known = ", ".join(self.versions()) or "none"
            raise ModelNotFound(
                f"model {version} is not in the registry at {self.root} (versions: {known})"
            ) from exc
        return ModelMetadata.from_json(raw, f"model {version}")

    def verify(self, version: str) -> ModelMetadata:
        """The metadata, once every file listed in it has the sha256 it records."""
        metadata = self.metadata(version)
        folder = self.path(version)
        if not metadata.files:
            raise ModelIntegrityError(f"model {version}: metadata.json lists no files")
        for name, expected in sorted(metadata.files.items()):
            path = folder / name
            if not path.is_file():
                raise ModelIntegrityError(f"model {version}: {name} is missing")
            actual = sha256_of(path)
            if actual != expected:
                raise ModelIntegrityError(
                    f"model {version}: {name} has sha256 {actual}, metadata.json says "
                    f"{expected}; the file was changed or corrupted after publishing"
                )
        return metadata

    def publish(
        self, metadata: ModelMetadata, files: Mapping[str, bytes | os.PathLike[str]]
    ) -> Path:
        """Write a new version atomically; ``files`` maps a file name to bytes or a path."""
        final = self.path(metadata.version)
        if final.exists():
            raise ModelError(f"model {metadata.version} already exists; versions are immutable")
        if METADATA_FILE in files:
            raise ModelError("metadata.json is written by the registry")
        self.models.mkdir(parents=True, exist_ok=True)
        staging = self.models / f".staging-{metadata.version}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            hashes = {}
            for name, content in files.items():
                if "/" in name or name.startswith("."):
                    raise ModelError(f"bad artifact name {name!r}")
                target = staging / name
                if isinstance(content, bytes):
                    target.write_bytes(content)
                else:
                    shutil.copyfile(content, target)
                hashes[name] = sha256_of(target)
            metadata.files = hashes
            metadata.created_at = metadata.created_at or datetime.now(UTC).isoformat()
            (staging / METADATA_FILE).write_bytes(metadata.to_json())
            for entry in staging.iterdir():
                _fsync(entry, directory=False)
            _fsync(staging, directory=True)
            os.rename(staging, final)
            _fsync(self.models, directory=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final


def _fsync(path: Path, directory: bool) -> None:
    descriptor = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
