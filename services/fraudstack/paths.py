"""Where fraudstack keeps things outside the clone.

* cache (Kafka jars, built binaries, Go tools): ``FRAUDSTACK_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/fraudstack``, else ``~/.cache/fraudstack``. A fresh clone reuses it; a fresh
  machine rebuilds it from the registries.
* devstack state (addresses, process ids, server data and logs): ``FRAUDSTACK_STATE_DIR``,
  else ``$XDG_STATE_HOME/fraudstack/devstack``, else ``~/.local/state/fraudstack/devstack``.
  ``fraudstack devstack up`` writes the servers' addresses there as ``FRAUDSTACK_*`` variables
  (:func:`devstack_env_file`), which every role's settings read after the environment: so no
  role imports the devstack to find it.
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


def devstack_env_file() -> Path:
    """The ``FRAUDSTACK_*`` variables of the running devstack (absent when it is not up)."""
    return state_dir() / "devstack.env"
