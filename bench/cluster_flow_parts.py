"""The parts the steps of :mod:`cluster_flow` share: kubectl, waiting, the options, what the
run observes (the Watcher's samples, its events) and vegeta's attacks."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cluster_flow_report import Sample

#: No phase of the flow attacks for longer; each ends it sooner.
ATTACK_LIMIT_SECONDS = 1_800


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the cluster, through kubectl ---------------------------------------------------------------


@dataclass
class Kube:
    kubectl: str
    kubeconfig: str | None
    namespace: str

    def attempt(self, *arguments: str, stdin: str | None = None) -> tuple[int, str]:
        """kubectl's exit code, and its output (its error output when it failed)."""
        argv = [self.kubectl, *([f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else [])]
        argv += ["-n", self.namespace, *arguments]
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=120, check=False
        )
        return result.returncode, result.stdout if result.returncode == 0 else result.stderr

    def run(self, *arguments: str, stdin: str | None = None, check: bool = True) -> str:
        code, output = self.attempt(*arguments, stdin=stdin)
        if check and code != 0:
            raise RuntimeError(f"kubectl {' '.join(arguments)}: {output.strip()}")
        return output

    def get(self, kind: str, name: str = "") -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            self.run("get", kind, *([name] if name else []), "-o", "json")
        )
        return found

    def apply(self, manifest: dict[str, Any]) -> None:
        self.run("apply", "-f", "-", stdin=json.dumps(manifest))


#: What a busy cluster answers now and then: tried again until the step's deadline.
TRANSIENT = (httpx.TransportError, RuntimeError, subprocess.TimeoutExpired, KeyError)


def wait(what: str, probe: Any, timeout: float, interval: float = 2.0) -> Any:
    """``probe()``'s first true value, asked every ``interval`` seconds for ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            value = probe()
        except TRANSIENT as exc:
            value, last_error = None, f" (last error: {exc})"
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}{last_error}")
        time.sleep(interval)


# -- options ------------------------------------------------------------------------------------


@dataclass
class Options:
    kube: Kube
    release: str
    prometheus: str
    ingest: str
    inference: str
    api_key: str
    vegeta: str
    fraudmodel: str
    rate: int
    scale_rate: int
    step_seconds: int
    scale_in_timeout: float
    versions: list[str]
    results: Path

    def name(self, component: str) -> str:
        """The chart's name for a component's objects (``fraudstack.fullname``)."""
        return f"{self.fullname}-{component}"

    @property
    def fullname(self) -> str:
        return self.release if "fraudstack" in self.release else f"{self.release}-fraudstack"


# -- what is observed ---------------------------------------------------------------------------


@dataclass
class Flow:
    """Everything the run observed, for the report."""

    workdir: Path  # vegeta's targets and results, removed after the report
    started: float = field(default_factory=time.time)
    events: list[dict[str, Any]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    attacks: list[Path] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def event(self, message: str) -> None:
        self.events.append({"t": round(time.time() - self.started, 1), "event": message})
        say(message)


class Watcher(threading.Thread):
    """Samples the FraudModel, the inference Deployment and its HPA every two seconds."""

    def __init__(self, options: Options, flow: Flow) -> None:
        super().__init__(daemon=True)
        self.options, self.flow = options, flow
        self.stopping = threading.Event()

    def run(self) -> None:
        kube, last_phase = self.options.kube, None
        while not self.stopping.wait(2.0):
            try:
                model = kube.get("fraudmodel", self.options.fraudmodel).get("status", {})
            except (*TRANSIENT, ValueError):  # none yet
                model = {}
            try:
                deployment = kube.get("deployment", self.options.name("inference"))["status"]
                hpa = kube.get("hpa", self.options.name("inference")).get("status", {})
            except (*TRANSIENT, ValueError) as exc:  # a gap in the timeline, said
                say(f"  (could not sample the inference Deployment: {exc})")
                continue
            sample = Sample(
                at=time.time() - self.flow.started,
                phase=str(model.get("phase", "")),
                share=int(model.get("candidateShare") or 0),
                step=int(model.get("currentStep") or 0),
                replicas=int(deployment.get("replicas", 0)),
                ready=int(deployment.get("readyReplicas", 0)),
                desired=int(hpa.get("desiredReplicas", 0)),
            )
            self.flow.samples.append(sample)
            if len(self.flow.samples) % 5 == 1:
                say(
                    f"  {sample.at:6.0f} s  FraudModel {sample.phase or '-'} step {sample.step} "
                    f"share {sample.share} %  inference pods {sample.ready}/{sample.replicas} "
                    f"Ready, HPA wants {sample.desired}"
                )
            if sample.phase and sample.phase != last_phase:
                # what `kubectl get fraudmodels` prints at that moment, as the user sees it
                shown = kube.run("get", "fraudmodels", check=False).strip()
                self.flow.phases.append({"t": round(sample.at, 1), "phase": sample.phase})
                self.flow.event(f"FraudModel phase {sample.phase}:\n{shown}")
                last_phase = sample.phase


@contextmanager
def attack(options: Options, flow: Flow, label: str, rate: int) -> Iterator[None]:
    """vegeta at a constant ``rate`` against ``GET /predict/{customer}`` while the block runs
    (at most ``ATTACK_LIMIT_SECONDS``: a driver killed outright leaves no endless attack)."""
    results = flow.workdir / f"vegeta-{label}.bin"
    targets = flow.facts["targets_file"]
    argv = [options.vegeta, "attack", f"-targets={targets}", f"-rate={rate}/s"]
    argv += [f"-duration={ATTACK_LIMIT_SECONDS}s", "-timeout=5s", f"-name={label}"]
    with (flow.workdir / f"vegeta-{label}.log").open("w") as log:
        process = subprocess.Popen([*argv, f"-output={results}"], stderr=log)
    time.sleep(0.5)
    if process.poll() is not None:
        said = (flow.workdir / f"vegeta-{label}.log").read_text().strip()
        raise RuntimeError(f"vegeta attack exited at once: {said}")
    flow.event(f"vegeta: {label} at {rate} requests/s")
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # vegeta stops and writes what it has
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        flow.attacks.append(results)
