"""Where fraudstack keeps things outside the clone.

* cache (Kafka jars, built binaries, Go tools): ``FRAUDSTACK_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/fraudstack``, else ``~/.cache/fraudstack``. A fresh clone reuses it; a fresh
  machine rebuilds it from the registries.
* devstack state (addresses, process ids, server data and logs): ``FRAUDSTACK_STATE_DIR``,
  else ``$XDG_STATE_HOME/fraudstack/devstack``, else ``~/.local/state/fraudstack/devstack``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    explicit = os.environ.get("FRAUDSTACK_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fraudstack"


def state_dir() -> Path:
    explicit = os.environ.get("FRAUDSTACK_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fraudstack" / "devstack"
