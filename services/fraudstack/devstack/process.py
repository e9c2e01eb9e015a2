"""Start, watch and stop the local servers' processes.

A server is started in its own session (process group), its output goes to a log file in the
state directory, and it is remembered by process id *and* executable, so ``down`` never kills a
process that merely reused a recorded id.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fraudstack.errors import DevstackError


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    argv: Sequence[str],
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Start ``argv`` detached from us, output to ``log_path``; return its process id."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return process.pid


def command_line(pid: int) -> str | None:
    """The command line of a live process, or None when it is gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # A zombie has exited already; it only waits for its parent to reap it.
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def is_ours(pid: int, marker: str) -> bool:
    """True when ``pid`` is alive and its command line still contains ``marker``."""
    line = command_line(pid)
    return line is not None and marker in line


def stop(pid: int, marker: str, timeout: float = 15.0) -> None:
    """Stop the process group led by ``pid`` (TERM, then KILL), if it is still ours."""
    if not is_ours(pid, marker):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if command_line(pid) is None:
            break
        _reap(pid)
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: nothing to reap
        os.waitpid(pid, os.WNOHANG)


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    pid: int | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll ``check`` until it is true; fail fast with the log's last line if the process died."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if check():
            return
        if pid is not None and command_line(pid) is None:
            raise DevstackError(f"{what} exited during start-up: {last_line(log_path)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise DevstackError(f"{what} did not answer within {timeout:.0f} s: {last_line(log_path)}")


def last_line(log_path: Path | None) -> str:
    """The last non-empty line of a log, to put a reason in a one-line error."""
    if log_path is None or not log_path.exists():
        return "no log"
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "empty log"


def run_checked(argv: Sequence[str], what: str, log_path: Path, cwd: Path | None = None) -> None:
    """Run a set-up step to completion; a failure becomes a one-line DevstackError."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        result = subprocess.run(
            list(argv), stdout=log, stderr=subprocess.STDOUT, cwd=cwd, check=False
        )
    if result.returncode != 0:
        raise DevstackError(f"{what} failed (exit {result.returncode}): {last_line(log_path)}")
