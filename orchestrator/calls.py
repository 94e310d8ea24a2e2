"""Calling silos: answers as they arrive, and one line for a failed call (never a Ray traceback)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

from silo.errors import SiloUnavailable


def failure_reason(err: BaseException) -> str:
    """One line for a failed silo call, never a Ray traceback."""
    if isinstance(err, RayTaskError):
        cause = err.cause
        return f"{type(cause).__name__}: {cause}" if cause is not None else str(err).splitlines()[0]
    if isinstance(err, RayActorError):
        return "silo actor is unavailable (process died, node lost or actor killed)"
    if isinstance(err, GetTimeoutError):
        return "no answer in time"
    return f"{type(err).__name__}: {err}"


def silo_gone(err: BaseException) -> bool:
    """The silo itself cannot answer (dead, or a site that is gone or refuses): another may."""
    if isinstance(err, RayTaskError):
        return isinstance(err.cause, SiloUnavailable)
    return isinstance(err, RayActorError)


def arrivals(refs: dict[Any, str], deadline: float) -> Iterator[tuple[str, Any]]:
    """(silo, result or RayError) as each call finishes, until ``deadline``. Refs are popped as
    they arrive (so Ray can free the object once it is used); those left in ``refs`` are late."""
    while refs:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=remaining)
        for ref in ready:
            name = refs.pop(ref)
            try:
                yield name, ray.get(ref)
            except RayError as err:
                yield name, err
