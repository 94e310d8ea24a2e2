"""Work the driver starts on threads while ``ray.init`` runs.

Starting a local Ray takes about 4 s on a 2-core machine, half of it with a core idle (the
driver waits on Ray's processes). The driver's own slow first steps fit there: importing the
silos' code (torch, pandas: the actor classes must be importable here to be started) and
opening MLflow's store (import and, on first use, its migrations). Nothing started here can
fail a run: an error is logged at debug and the same step, done again where it is needed,
raises it there.

    started = early.start(tracking_uri)   # before ray.init
    ...ray.init...
    early.wait(started)                    # before the tracker and the actors
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

SILO_CODE = "silo.actor"  # the silo actor's class, and with it torch and pandas


def _open_store(tracking_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri)  # MLflow keeps one store per URI: RunTracker finds it open


def _quietly(step: str, work: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            work()
        except Exception as err:  # done again where it is needed, and reported there
            logger.debug("%s early failed: %s", step, err)

    return run


def start(tracking_uri: str) -> list[threading.Thread]:
    """Open the tracking store and import the silos' code, each on a daemon thread."""
    steps = {
        "opening the MLflow store": lambda: _open_store(tracking_uri),
        "importing the silo code": lambda: importlib.import_module(SILO_CODE),
    }
    threads = [
        threading.Thread(target=_quietly(step, work), name=f"fedsilo-early-{i}", daemon=True)
        for i, (step, work) in enumerate(steps.items())
    ]
    for thread in threads:
        thread.start()
    return threads


def wait(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()
