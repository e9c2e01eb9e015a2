"""Prometheus: Debian's ``prometheus``, scraping what registers a target file.

Services join the scrape by writing a file-based service-discovery file into
``<state>/prometheus/targets/`` (:func:`fraudstack.adapters.scrape.register_target`); the
devstack publishes that folder as ``FRAUDSTACK_SCRAPE_TARGETS_DIR``. Prometheus watches it, so
a new target is scraped within a scrape interval, without a reload.
"""

from __future__ import annotations

import httpx

from fraudstack.devstack.base import Context, Server, ServerInfo
from fraudstack.devstack.process import free_port, spawn, wait_until
from fraudstack.devstack.system import ensure_binary

SCRAPE_INTERVAL = "1s"

_CONFIG = """\
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:{port}"]
  - job_name: fraudstack
    file_sd_configs:
      - files: ["{targets}/*.json"]
        refresh_interval: 5s
"""


class PrometheusServer(Server):
    name = "prometheus"

    def prepare(self, context: Context) -> None:
        self.binary = ensure_binary("prometheus", "prometheus")

    def start(self, context: Context) -> ServerInfo:
        folder = context.server_dir(self.name)
        targets = folder / "targets"
        targets.mkdir(exist_ok=True)
        port = free_port()
        config = folder / "prometheus.yml"
        config.write_text(_CONFIG.format(interval=SCRAPE_INTERVAL, port=port, targets=targets))
        log = folder / "prometheus.log"
        pid = spawn(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
            ],
            log,
        )
        info: ServerInfo = {
            "pids": [pid],
            "marker": f"127.0.0.1:{port}",
            "address": f"http://127.0.0.1:{port}",
            "targets_dir": str(targets),
            "log": str(log),
        }
        wait_until(lambda: self.answers(info), "prometheus", 30, pid, log)
        return info

    def answers(self, info: ServerInfo) -> bool:
        try:
            return httpx.get(f"{info['address']}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def environment(self, info: ServerInfo) -> dict[str, str]:
        return {
            "FRAUDSTACK_PROMETHEUS_URL": info["address"],
            "FRAUDSTACK_SCRAPE_TARGETS_DIR": info["targets_dir"],
        }
