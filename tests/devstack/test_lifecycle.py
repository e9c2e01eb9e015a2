"""``up`` is idempotent, ``status`` answers, ``down`` leaves no process of ours behind."""

from __future__ import annotations

from pathlib import Path

from fraudstack.devstack import Devstack
from fraudstack.devstack.process import command_line


def test_up_status_down(tmp_path: Path) -> None:
    stack = Devstack(state=tmp_path / "stack")
    first = stack.up(progress=False)
    try:
        assert all(row.answering for row in stack.status())
        second = stack.up(progress=False)
        # Idempotent: the servers that answered were kept, not restarted.
        assert {name: info["pids"] for name, info in second.items()} == {
            name: info["pids"] for name, info in first.items()
        }
    finally:
        stopped = stack.down()
    assert sorted(stopped) == ["kafka", "prometheus", "redis"]
    pids = [pid for info in first.values() for pid in info["pids"]]
    assert all(command_line(pid) is None for pid in pids)
    assert not any(row.answering for row in stack.status())
