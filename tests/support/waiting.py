"""The one way tests wait: poll a probe until it holds, or for as long as it must not.

``eventually`` returns as soon as the probe answers something truthy and fails with the last
answer when the time is up. ``never`` is its mirror for things that must NOT happen: it keeps
polling for the whole period, so a test that asserts an absence has looked for long enough to
have seen it, instead of sleeping a fixed time and then looking once. Both have an ``_async``
twin that yields to the event loop between probes (and awaits a probe that is a coroutine).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

INTERVAL = 0.1


def _rounds(seconds: float) -> Iterator[bool]:
    """One item per probe; the last is True: the period is over once it has been probed."""
    deadline = time.monotonic() + seconds
    while True:
        yield time.monotonic() >= deadline


def eventually(
    probe: Callable[[], T], what: str, timeout: float = 20.0, interval: float = INTERVAL
) -> T:
    """Poll ``probe`` until it returns something truthy; return that."""
    last: T | None = None
    for final in _rounds(timeout):
        last = probe()
        if last:
            return last
        if final:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def never(
    probe: Callable[[], object], what: str, during: float, interval: float = INTERVAL
) -> None:
    """Poll ``probe`` for ``during`` seconds; fail as soon as it returns something truthy."""
    for final in _rounds(during):
        seen = probe()
        if seen:
            raise AssertionError(f"{what} happened: {seen!r}")
        if final:
            return
        time.sleep(interval)


async def _call(probe: Callable[[], T | Awaitable[T]]) -> T:
    value = probe()
    if inspect.isawaitable(value):
        return await value
    return value


async def eventually_async(
    probe: Callable[[], T | Awaitable[T]],
    what: str,
    timeout: float = 20.0,
    interval: float = INTERVAL,
) -> T:
    """:func:`eventually` inside an event loop: other tasks run between probes."""
    last: T | None = None
    for final in _rounds(timeout):
        last = await _call(probe)
        if last:
            return last
        if final:
            break
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


async def never_async(
    probe: Callable[[], object], what: str, during: float, interval: float = INTERVAL
) -> None:
    """:func:`never` inside an event loop."""
    for final in _rounds(during):
        seen = await _call(probe)
        if seen:
            raise AssertionError(f"{what} happened: {seen!r}")
        if final:
            return
        await asyncio.sleep(interval)
