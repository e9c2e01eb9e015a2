"""Kafka: Apache Kafka in KRaft mode (one node, broker and controller) from Maven Central jars.

The jars are resolved once with ``mvn dependency:copy-dependencies`` into
``<cache>/kafka/<version>/libs``; the storage is formatted with ``kafka.tools.StorageTool`` and the
broker started with ``kafka.Kafka``. Readiness is a real metadata request, never a sleep.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import socket
import uuid
from importlib import resources
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from fraudstack.devstack.base import Context, Server, ServerInfo
from fraudstack.devstack.process import free_port, run_checked, spawn, wait_until
from fraudstack.errors import DevstackError

KAFKA_VERSION = "3.9.1"
DEFAULT_PARTITIONS = 4

_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dirs}
num.partitions={partitions}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
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
    name = "kafka"

    def prepare(self, context: Context) -> None:
        self.java = shutil.which("java")
        if self.java is None:
            raise DevstackError("java is missing: install OpenJDK 17 (Debian: openjdk-17-jre)")
        self.libs = ensure_jars(context.cache_dir)

    def start(self, context: Context) -> ServerInfo:
        folder = context.server_dir(self.name)
        port, controller_port = free_port(), free_port()
        properties = folder / "server.properties"
        properties.write_text(
            _PROPERTIES.format(
                port=port,
                controller_port=controller_port,
                log_dirs=folder / "data",
                partitions=DEFAULT_PARTITIONS,
            )
        )
        log4j = folder / "log4j.properties"
        log4j.write_text(_LOG4J)
        log = folder / "kafka.log"
        java = [
            str(self.java),
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{log4j}",
            "-cp",
            f"{self.libs}/*",
        ]
        shutil.rmtree(folder / "data", ignore_errors=True)
        run_checked(
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                _cluster_id(),
                "-c",
                str(properties),
            ],
            "formatting Kafka storage",
            log,
        )
        pid = spawn([*java, "kafka.Kafka", str(properties)], log)
        info: ServerInfo = {
            "pids": [pid],
            "marker": str(properties),
            "address": f"127.0.0.1:{port}",
            "log": str(log),
        }
        wait_until(lambda: self.answers(info), "kafka broker", 90, pid, log)
        return info

    def answers(self, info: ServerInfo) -> bool:
        return asyncio.run(_metadata_answers(info["address"]))

    def environment(self, info: ServerInfo) -> dict[str, str]:
        return {"FRAUDSTACK_KAFKA_BOOTSTRAP": info["address"]}


async def _metadata_answers(bootstrap: str) -> bool:
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
        return bool(cluster.get("brokers"))
    except Exception:  # any failure here means "not answering yet"
        return False
    finally:
        await admin.close()
        aiokafka_log.setLevel(previous_level)


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
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
