"""Helpers shared by the operator tests: FraudModel bodies, reading them back, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from kubernetes import client

from fraudstack.routing import RoutingDocument

GROUP, VERSION, PLURAL = "fraudstack.io", "v1alpha1", "fraudmodels"
T = TypeVar("T")


def fraud_model(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FraudModel",
        "metadata": {"name": name},
        "spec": spec,
    }


def read(objects: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    found = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert isinstance(found, dict)
    return found


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in body.get("status", {}).get("conditions", []):
        if item["type"] == kind:
            return dict(item)
    return {}


def published(store: redis.Redis, key: str) -> RoutingDocument | None:
    raw = store.get(key)
    return None if raw is None else RoutingDocument.from_json(raw)  # type: ignore[arg-type]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def wait_for_status(
    objects: client.CustomObjectsApi,
    namespace: str,
    name: str,
    what: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 20.0,
) -> dict[str, Any]:
    """The FraudModel once ``predicate(body)`` holds."""

    def probe() -> dict[str, Any] | None:
        body = read(objects, namespace, name)
        return body if predicate(body) else None

    return wait_for(f"{name}: {what}", probe, timeout)


def delete_and_wait(
    objects: client.CustomObjectsApi, namespace: str, name: str, timeout: float = 20.0
) -> None:
    """Delete a FraudModel and wait until it is gone (the operator's finalizer has run)."""
    try:
        objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except client.ApiException as exc:
        if exc.status == 404:
            return
        raise

    def gone() -> bool:
        try:
            read(objects, namespace, name)
        except client.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(f"{name} to be deleted", gone, timeout)
