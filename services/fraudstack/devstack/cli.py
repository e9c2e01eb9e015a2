"""``fraudstack devstack up | down | status``."""

from __future__ import annotations

import argparse

from fraudstack.devstack import Devstack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"], help="what to do")
    parser.add_argument(
        "--kube",
        action="store_true",
        help="also start etcd and a kube-apiserver (for the chart and the operator)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also start a real single-node Kubernetes cluster (needs root; see devstack.cluster)",
    )
    parser.add_argument(
        "--kafka-brokers",
        type=int,
        choices=[1, 3],
        default=1,
        help="Kafka nodes: 1, or a cluster of 3 (replication factor 3, min.insync.replicas=2)",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="Redis as a cluster of three masters (redis+cluster:// URL) instead of one server",
    )


def run(args: argparse.Namespace) -> int:
    stack = Devstack(kafka_brokers=args.kafka_brokers, redis_cluster=args.redis_cluster)
    if args.action == "up":
        print(f"devstack: state in {stack.state_path}")
        extra = (["kube"] if args.kube else []) + (["cluster"] if args.cluster else [])
        stack.up(extra=extra)
        return _print_status(stack)
    if args.action == "down":
        stopped = stack.down()
        print(f"devstack: stopped {', '.join(stopped) if stopped else 'nothing (was not up)'}")
        return 0
    return _print_status(stack)


def _print_status(stack: Devstack) -> int:
    rows = stack.status()
    width = max([36, *(len(row.address) + 2 for row in rows)])  # a cluster's URL is long
    pids = {row.name: ",".join(str(pid) for pid in row.pids) or "-" for row in rows}
    pids_width = max([16, *(len(text) + 2 for text in pids.values())])  # the cluster has 8
    print(f"{'server':<12}{'address':<{width}}{'pids':<{pids_width}}answering")
    for row in rows:
        answering = "yes" if row.answering else "no"
        print(f"{row.name:<12}{row.address:<{width}}{pids[row.name]:<{pids_width}}{answering}")
    return 0 if rows and all(row.answering for row in rows) else 1
