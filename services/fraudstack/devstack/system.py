"""Install Debian packages the local stack needs, when they are missing."""

from __future__ import annotations

import os
import shutil
import subprocess

from fraudstack.errors import DevstackError

_apt_updated = False
LOCK_TIMEOUT_S = 300


def ensure_binary(binary: str, package: str) -> str:
    """Return the path of ``binary``, installing Debian's ``package`` first when it is missing.

    Installing needs root (as on CI machines of this project); otherwise the error says what
    to install by hand. Another apt-get at work (a second test run, a fresh machine's automatic
    updates) holds dpkg's lock: the install waits for it, up to five minutes, instead of failing.
    """
    found = shutil.which(binary) or _in_sbin(binary)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise DevstackError(f"{binary} is missing: install the Debian package '{package}'")
    global _apt_updated
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", f"DPkg::Lock::Timeout={LOCK_TIMEOUT_S}"]
    steps = [["apt-get", *wait, "install", "-y", "-q", "--no-install-recommends", package]]
    if not _apt_updated:
        steps.insert(0, ["apt-get", *wait, "update", "-q"])
    for step in steps:
        result = subprocess.run(step, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            raise DevstackError(f"'{' '.join(step)}' failed: {' '.join(tail)}")
    _apt_updated = True
    found = shutil.which(binary) or _in_sbin(binary)
    if not found:
        raise DevstackError(f"package '{package}' installed but {binary} is still not found")
    return found


def _in_sbin(binary: str) -> str | None:
    for folder in ("/usr/sbin", "/usr/bin", "/sbin"):
        candidate = os.path.join(folder, binary)
        if os.access(candidate, os.X_OK):
            return candidate
    return None
