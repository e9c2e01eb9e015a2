"""Kafka: Apache Kafka in KRaft mode from Maven Central jars, one node or a cluster of three.

The jars are resolved once with ``mvn dependency:copy-dependencies`` into
``<cache>/kafka/<version>/libs``; each node's storage is formatted with ``kafka.tools.StorageTool``
and the node started with ``kafka.Kafka``. Readiness is a real metadata request that sees every
broker, never a sleep.

Every node is both broker and controller (``process.roles=broker,controller``). With three, the
controllers form a quorum that survives one lost node, and the cluster's defaults are the ones
production relies on: replication factor 3 and ``min.insync.replicas=2`` for every topic
(fraudstack's own, the consumer offsets and the transaction log), so a write acknowledged with
``acks=all`` is on at least two brokers and one broker may die without losing it. One node keeps
replication factor 1 (the only thing it can do).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import uuid
from importlib import resources
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from fraudstack.adapters.kafka import replication_for
from fraudstack.devstack.base import Context, Server, ServerInfo
from fraudstack.devstack.process import (
    command_line,
    free_port,
    run_checked,
    spawn,
    stop,
    wait_until,
)
from fraudstack.errors import DevstackError

KAFKA_VERSION = "3.9.1"
DEFAULT_PARTITIONS = 4

_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dirs}
num.partitions={partitions}
default.replication.factor={replication}
min.insync.replicas={min_insync}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=4
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_insync}
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=48
"""

_LOG4J = """\
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
"""


class KafkaServer(Server):
    """``brokers`` KRaft nodes (1 or 3); ``info["nodes"]`` records each, so a test can stop
    one (:func:`stop_node`) and start it again on its ports and data (:func:`start_node`)."""

    name = "kafka"

    def __init__(self, brokers: int = 1) -> None:
        if brokers not in (1, 3):
            raise DevstackError(f"--kafka-brokers must be 1 or 3, not {brokers}")
        self.brokers = brokers

    def prepare(self, context: Context) -> None:
        self.java = shutil.which("java")
        if self.java is None:
            raise DevstackError("java is missing: install OpenJDK 17 (Debian: openjdk-17-jre)")
        self.libs = ensure_jars(context.cache_dir)

    def start(self, context: Context) -> ServerInfo:
        folder = context.server_dir(self.name)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        ids = range(1, self.brokers + 1)
        ports = {node_id: (free_port(), free_port()) for node_id in ids}
        voters = ",".join(f"{n}@127.0.0.1:{ports[n][1]}" for n in ids)
        replication, min_insync = replication_for(self.brokers)
        log4j = folder / "log4j.properties"
        log4j.write_text(_LOG4J)
        cluster_id = _cluster_id()
        nodes = []
        for node_id in ids:
            port, controller_port = ports[node_id]
            node_dir = folder / f"node-{node_id}"
            node_dir.mkdir()
            properties = node_dir / "server.properties"
            properties.write_text(
                _PROPERTIES.format(
                    node_id=node_id,
                    voters=voters,
                    port=port,
                    controller_port=controller_port,
                    log_dirs=node_dir / "data",
                    partitions=DEFAULT_PARTITIONS,
                    replication=replication,
                    min_insync=min_insync,
                )
            )
            node: ServerInfo = {
                "id": node_id,
                "address": f"127.0.0.1:{port}",
                "properties": str(properties),
                "log": str(node_dir / "kafka.log"),
                "java": [*_java(str(self.java), self.libs, log4j, self.brokers)],
            }
            storage = [*node["java"], "kafka.tools.StorageTool", "format"]
            run_checked(
                [*storage, "-t", cluster_id, "-c", str(properties)],
                f"formatting Kafka node {node_id}'s storage",
                Path(node["log"]),
            )
            nodes.append(node)
        for node in nodes:
            start_node(node)
        info: ServerInfo = {
            "pids": [node["pid"] for node in nodes],
            "marker": str(folder),
            "address": ",".join(node["address"] for node in nodes),
            "brokers": self.brokers,
            "nodes": nodes,
            "log": nodes[0]["log"],
        }
        what = f"kafka ({self.brokers} broker{'s' if self.brokers > 1 else ''})"
        wait_until(lambda: self.answers(info), what, 120, nodes[0]["pid"], Path(info["log"]))
        return info

    def answers(self, info: ServerInfo) -> bool:
        return asyncio.run(_metadata_answers(info["address"], info.get("brokers", 1)))

    def fits(self, info: ServerInfo) -> bool:
        return int(info.get("brokers", 1)) == self.brokers

    def environment(self, info: ServerInfo) -> dict[str, str]:
        return {"FRAUDSTACK_KAFKA_BOOTSTRAP": info["address"]}


def _java(java: str, libs: Path, log4j: Path, brokers: int) -> list[str]:
    heap = "768m" if brokers == 1 else "512m"  # three JVMs share the machine
    return [
        java,
        "-Xms256m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        f"{libs}/*",
    ]


def start_node(node: ServerInfo) -> int:
    """Start one node (again: same ports, same data); record and return its process id."""
    node["pid"] = spawn([*node["java"], "kafka.Kafka", node["properties"]], Path(node["log"]))
    return int(node["pid"])


def stop_node(node: ServerInfo, kill: bool = False) -> None:
    """Stop one node: a clean shutdown, or ``kill -9`` (a crash)."""
    pid = int(node["pid"])
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: command_line(pid) is None, f"kafka node {node['id']} to die", 30)
    else:
        stop(pid, node["properties"], timeout=60)


async def _metadata_answers(bootstrap: str, brokers: int = 1) -> bool:
    if not _port_open(bootstrap):
        return False
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    # While the broker boots, aiokafka logs every refused request; the poll says enough. The
    # level is put back afterwards: the process's own Kafka clients keep their logs.
    aiokafka_log = logging.getLogger("aiokafka")
    previous_level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return len(cluster.get("brokers") or []) >= brokers
    except Exception:  # any failure here means "not answering yet"
        return False
    finally:
        await admin.close()
        aiokafka_log.setLevel(previous_level)


def _port_open(bootstrap: str) -> bool:
    """Whether any of the bootstrap servers accepts a connection."""
    for address in bootstrap.split(","):
        host, port = address.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return True
        except OSError:
            continue
    return False


def ensure_jars(cache_dir: Path, version: str = KAFKA_VERSION) -> Path:
    """The folder of the broker's jars, resolved from Maven Central on first use."""
    target = cache_dir / "kafka" / version
    libs = target / "libs"
    done = target / ".complete"
    if done.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevstackError("mvn is missing: install Maven (Debian: maven) to fetch Kafka's jars")
    target.mkdir(parents=True, exist_ok=True)
    pom = target / "pom.xml"
    template = resources.files("fraudstack.devstack").joinpath("kafka-pom.xml").read_text()
    pom.write_text(template.replace("@KAFKA_VERSION@", version))
    print(f"fetching Kafka {version} jars from Maven Central (first run only)...", flush=True)
    shutil.rmtree(libs, ignore_errors=True)
    run_checked(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        "resolving Kafka jars with Maven",
        target / "mvn.log",
    )
    done.touch()
    return libs


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with ``-`` (1 in 64 would): the storage tool's argument parser takes it
    for an option, which is why Kafka's own ``Uuid.randomUuid()`` draws again in that case.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
