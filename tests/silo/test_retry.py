"""Retries with backoff: connection failures are retried a bounded number of times, nothing else."""

from __future__ import annotations

import pytest

from silo.retry import RegistryUnavailable, retry_transient


def test_a_connection_failure_is_retried_with_growing_delays() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("Connection refused")
        return "ok"

    assert retry_transient(flaky, "reading", "http://mlflow:5000", sleep=waits.append) == "ok"
    assert len(calls) == 3 and waits == [0.5, 1.0]


def test_it_gives_up_naming_the_uri() -> None:
    def down() -> None:
        raise ConnectionError("Connection refused")

    with pytest.raises(
        RegistryUnavailable, match=r"MLflow at http://mlflow:5000 did not answer while tagging"
    ):
        retry_transient(down, "tagging", "http://mlflow:5000", attempts=3, sleep=lambda _: None)


def test_a_refused_request_fails_at_once() -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise ValueError("alias 'v1' is reserved")

    with pytest.raises(ValueError, match="reserved"):
        retry_transient(refused, "aliasing", "sqlite:///x.db", sleep=lambda _: None)
    assert len(calls) == 1
