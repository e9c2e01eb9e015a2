"""The local image registry (Debian's ``docker-registry``) and a tiny OCI image pusher.

No public registry is reachable, so every image the cluster runs comes from 127.0.0.1:5000,
which containerd pulls from over plain HTTP (``hosts.toml``, see :mod:`.node`). Images whose
whole content is a few static files (pause, CoreDNS, a test's busybox) are pushed straight
through the registry's HTTP API by :func:`push_files_image`: one uncompressed layer, an OCI
config and manifest, nothing to install. Images with a real build go through podman
(``make images``).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from fraudstack.devstack.process import spawn, wait_until
from fraudstack.errors import DevstackError

REGISTRY_ADDRESS = "127.0.0.1:5000"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def registry_answers(address: str = REGISTRY_ADDRESS) -> bool:
    try:
        response = httpx.get(f"http://{address}/v2/", timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def start_registry(binary: str, folder: Path, storage: Path) -> int | None:
    """Start the registry on 127.0.0.1:5000; None when one already answers there (kept)."""
    if registry_answers():
        return None
    storage.mkdir(parents=True, exist_ok=True)
    config = folder / "registry.yml"
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(storage)}},
                "http": {"addr": REGISTRY_ADDRESS},
            }
        )
    )
    log = folder / "registry.log"
    pid = spawn([binary, "serve", str(config)], log)
    wait_until(registry_answers, "image registry", 30, pid, log)
    return pid


def image_exists(repository: str, tag: str) -> bool:
    try:
        response = httpx.head(
            f"http://{REGISTRY_ADDRESS}/v2/{repository}/manifests/{tag}",
            headers={"Accept": OCI_MANIFEST},
            timeout=5,
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def push_files_image(
    repository: str,
    tag: str,
    files: Mapping[str, Path | bytes],
    entrypoint: Sequence[str],
    symlinks: Mapping[str, str] | None = None,
) -> str:
    """Push a FROM-scratch image of ``files`` (path in image -> host file or bytes).

    Returns the image reference as containerd pulls it.
    """
    layer = _layer(files, symlinks or {})
    layer_digest = _digest(layer)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": list(entrypoint), "Env": ["PATH=/bin:/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
        }
    ).encode()
    base = f"http://{REGISTRY_ADDRESS}/v2/{repository}"
    try:
        with httpx.Client(timeout=60) as client:
            for blob in (layer, config):
                _upload_blob(client, base, blob)
            response = client.put(
                f"{base}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
            )
            response.raise_for_status()
    except httpx.HTTPError as exc:
        raise DevstackError(f"pushing {repository}:{tag} to {REGISTRY_ADDRESS} failed") from exc
    return f"{REGISTRY_ADDRESS}/{repository}:{tag}"


def _upload_blob(client: httpx.Client, base: str, blob: bytes) -> None:
    digest = _digest(blob)
    if client.head(f"{base}/blobs/{digest}").status_code == 200:
        return
    started = client.post(f"{base}/blobs/uploads/")
    started.raise_for_status()
    location = started.headers["Location"]
    if location.startswith("/"):
        location = f"http://{REGISTRY_ADDRESS}{location}"
    separator = "&" if "?" in location else "?"
    finished = client.put(
        f"{location}{separator}digest={digest}",
        content=blob,
        headers={"Content-Type": "application/octet-stream"},
    )
    finished.raise_for_status()


def _layer(files: Mapping[str, Path | bytes], symlinks: Mapping[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folders = sorted(
            {str(Path(name).parent).lstrip("/") for name in [*files, *symlinks]} - {""}
        )
        for folder in folders:
            entry = tarfile.TarInfo(folder)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(entry)
        for name, content in sorted(files.items()):
            data = content.read_bytes() if isinstance(content, Path) else content
            entry = tarfile.TarInfo(name.lstrip("/"))
            entry.size, entry.mode = len(data), 0o755
            tar.addfile(entry, io.BytesIO(data))
        for name, target in sorted(symlinks.items()):
            entry = tarfile.TarInfo(name.lstrip("/"))
            entry.type, entry.linkname = tarfile.SYMTYPE, target
            tar.addfile(entry)
    return buffer.getvalue()


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()
