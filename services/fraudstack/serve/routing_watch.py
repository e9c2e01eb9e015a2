"""Follow the routing the FraudModel operator publishes, from inside an inference worker.

The operator writes a :class:`~fraudstack.routing.RoutingDocument` as JSON to one Redis key
(``fraudstack:routing`` by default, ``FRAUDSTACK_ROUTING_KEY``). :func:`watch_routing` runs as a
task in each worker's event loop and polls that key: one ``GET`` per interval, which Redis
answers in microseconds, so a few hundred workers cost it nothing, and no connection is held
open the way a pub/sub subscription would be (polling also needs no catch-up after a
reconnection: the next ``GET`` is the truth). When the document's routing changes it awaits
``apply(document)``; the worker builds the new routing there (loading a model off the event loop
if it must) and swaps it in one step, so requests in flight finish on the routing they started
with and none fails.

What it never does is stop serving:

* an unreadable or invalid document is logged (once per distinct value) and ignored: the worker
  keeps its current routing until a valid one appears;
* ``apply`` failing (a model that does not load, say) is logged, the current routing stays, and
  the same document is tried again after ``retry_apply_s``;
* Redis being away is logged once when it goes and once when it is back; meanwhile the poll backs
  off up to ``max_backoff_s`` and the current routing stays;
* the key disappearing (the FraudModel was deleted) keeps the current routing: the last routing
  published is still the best one known.

Only the routing fields (stable, candidate, share, mode) count as a change; a document that
differs in ``generation``, ``updated_at`` or ``source`` alone is noted, not applied again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from fraudstack.routing import InvalidRouting, RoutingDocument

log = logging.getLogger("fraudstack.serve.routing")

ApplyRouting = Callable[[RoutingDocument], Awaitable[None]]


class RoutingSource(Protocol):
    """What the watch needs of a Redis client: ``redis.asyncio.Redis`` has it."""

    def get(self, name: str) -> Awaitable[bytes | str | None]: ...


async def read_routing(
    redis_client: RoutingSource, key: str, timeout_s: float = 2.0
) -> RoutingDocument | None:
    """The document at ``key`` now, or None when there is none (errors are raised).

    For a worker's start-up, so it begins with the published routing rather than its settings'.
    """
    raw = await asyncio.wait_for(redis_client.get(key), timeout_s)
    return None if raw is None else RoutingDocument.from_json(raw)


async def watch_routing(
    redis_client: RoutingSource,
    key: str,
    apply: ApplyRouting,
    interval_s: float = 0.5,
    *,
    current: RoutingDocument | None = None,
    timeout_s: float = 2.0,
    retry_apply_s: float = 10.0,
    max_backoff_s: float = 5.0,
) -> None:
    """Poll ``key`` every ``interval_s`` and ``await apply(document)`` when its routing changes.

    ``current`` is the routing the worker already serves, if it came from the key (see
    :func:`read_routing`); it is not applied again. Runs until cancelled.
    """
    loop = asyncio.get_running_loop()
    applied = current
    seen: bytes | str | None = None  # the last value handled (applied, ignored or refused)
    failed: bytes | str | None = None  # a value whose apply failed, and when to try it again
    retry_at = 0.0
    outage_since: float | None = None
    missing_logged = False
    delay = interval_s
    while True:
        await asyncio.sleep(delay)
        delay = interval_s
        try:
            raw = await asyncio.wait_for(redis_client.get(key), timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any client error: the worker must keep serving
            if outage_since is None:
                outage_since = loop.time()
                log.warning(
                    "cannot read the routing at %s (%s); keeping the current routing",
                    key,
                    str(exc) or type(exc).__name__,
                )
            delay = min(max_backoff_s, max(interval_s, (loop.time() - outage_since) / 2))
            continue
        if outage_since is not None:
            log.info("routing key %s readable again after %.1fs", key, loop.time() - outage_since)
            outage_since = None

        if raw is None:
            if not missing_logged:
                log.info("no routing published at %s; keeping the current routing", key)
                missing_logged = True
            seen = None
            continue
        missing_logged = False
        if raw == seen or (raw == failed and loop.time() < retry_at):
            continue

        try:
            document = RoutingDocument.from_json(raw)
        except InvalidRouting as exc:
            log.error("ignoring the routing at %s: %s; keeping the current routing", key, exc)
            seen = raw
            continue
        if document.same_routing(applied):
            seen, applied = raw, document
            continue
        try:
            await apply(document)
        except asyncio.CancelledError:
            raise
        except Exception:  # a model that does not load must not take the worker down
            log.exception(
                "could not switch to the routing from %s (generation %d); keeping the current "
                "routing, next attempt in %.0fs",
                document.source,
                document.generation,
                retry_apply_s,
            )
            failed, retry_at = raw, loop.time() + retry_apply_s
            continue
        log.info(
            "routing from %s (generation %d): stable %s, candidate %s at %g%% (%s)",
            document.source,
            document.generation,
            document.stable,
            document.candidate or "none",
            document.candidate_share,
            document.mode,
        )
        seen, applied, failed = raw, document, None
