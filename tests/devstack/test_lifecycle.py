"""``up`` is idempotent, ``status`` answers, ``down`` leaves no process of ours behind."""

from __future__ import annotations

from pathlib import Path

from fraudstack.adapters.redis_clients import redis_client
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


def test_up_redis_cluster_records_a_cluster_of_three_masters(tmp_path: Path) -> None:
    """``up --redis-cluster``: three cluster-mode redis-servers joined by ``redis-cli``, their
    ``redis+cluster://`` URL in the state and in devstack.env; ``up`` without the flag puts the
    single server back."""
    stack = Devstack(state=tmp_path / "stack", redis_cluster=True)
    first = stack.up(progress=False)
    try:
        redis = first["redis"]
        assert redis["cluster"] and len(redis["pids"]) == 3 == len(redis["ports"])
        assert redis["address"] == "redis+cluster://" + ",".join(
            f"127.0.0.1:{port}" for port in redis["ports"]
        )
        assert f'FRAUDSTACK_REDIS_URL="{redis["address"]}"' in stack.env_path.read_text()
        assert all(row.answering for row in Devstack(state=tmp_path / "stack").status())
        client = redis_client(redis["address"])
        try:
            assert int(client.cluster_info()["cluster_known_nodes"]) == 3
            assert client.set("fs:{customer:devstack}", "1")
        finally:
            client.close()
        again = stack.up(progress=False)
        assert again["redis"]["pids"] == redis["pids"]  # kept, not restarted
        single = Devstack(state=tmp_path / "stack").up(progress=False)["redis"]
        assert not single.get("cluster") and single["address"].startswith("redis://")
        assert all(command_line(pid) is None for pid in redis["pids"])
    finally:
        stack.down()
