"""Bounded retries with exponential backoff for calls to the MLflow tracking server / registry.

    from silo.retry import retry_transient
    version = retry_transient(lambda: client.get_model_version(name, "3"), "reading version 3", uri)

Only connection-type failures are retried (the server is down, restarting or timing out);
a refused request (a name that does not exist, an invalid alias) fails at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 4
FIRST_DELAY_S = 0.5  # then 1, 2: about 3.5 s in all before giving up

_TRANSIENT_WORDS = (
    "connection",
    "max retries exceeded",
    "timed out",
    "timeout",
    "temporarily unavailable",
    "database is locked",
    "503",
    "502",
)


class RegistryUnavailable(RuntimeError):
    """The tracking server / registry did not answer after the retries; names its URI."""


def is_transient(err: BaseException) -> bool:
    """A failure worth retrying: the server could not be reached, not a refused request."""
    if isinstance(err, ConnectionError | TimeoutError):
        return True
    try:
        import requests

        if isinstance(err, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return True
    except ImportError:  # pragma: no cover - requests comes with mlflow
        pass
    text = str(err).lower()
    return any(word in text for word in _TRANSIENT_WORDS)


def retry_transient(
    call: Callable[[], T],
    what: str,
    uri: str,
    attempts: int = ATTEMPTS,
    first_delay_s: float = FIRST_DELAY_S,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, retried on transient failures with delays first_delay_s, 2x, 4x, ..."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as err:
            if not is_transient(err):
                raise
            if attempt == attempts:
                raise RegistryUnavailable(
                    f"MLflow at {uri} did not answer while {what} ({attempts} attempts over "
                    f"{first_delay_s * (2 ** (attempts - 1) - 1):.1f} s of waiting): {_short(err)}"
                ) from None
            logger.warning("%s: MLflow at %s failed (%s); retrying in %.1f s", what, uri, _short(err), delay)
            sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"
