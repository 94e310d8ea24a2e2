"""Shared fixtures: a local Ray on 127.0.0.1, example pipelines with absolute paths, small tables."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.spec import bundled_example

EXAMPLE_DIR = bundled_example().parent
HEART_COLUMNS = [
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg",
    "thalach", "exang", "oldpeak", "slope", "ca", "thal", "num",
]  # fmt: skip


def free_port() -> int:
    """A port nothing listens on (yet) on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float) -> None:
    """Until something accepts connections on 127.0.0.1:``port``, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)


@contextlib.contextmanager
def ray_head(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    wait_port: int | None = None,
    timeout_s: float = 60.0,
) -> Iterator[int]:
    """`ray start --head --block` on 127.0.0.1 with ``args`` added; yields its GCS port once
    ``wait_port`` (default: that port) answers; stopped when the block ends (never a global
    `ray stop`)."""
    port = free_port()
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address",
         "127.0.0.1", "--port", str(port), "--num-cpus", "2", "--disable-usage-stats", *args],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port(wait_port or port, timeout_s)
        yield port
    finally:
        head.terminate()
        try:
            head.wait(timeout=timeout_s / 2)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    yield
    ray.shutdown()


@pytest.fixture
def namespace() -> str:
    """A fresh Ray namespace per test, so actor names never collide."""
    return f"test-{uuid.uuid4().hex[:8]}"


def example_pipeline_text(**replacements: str) -> str:
    """The bundled pipeline with absolute silo paths, and ``key = value`` lines replaced."""
    text = bundled_example().read_text()
    text = re.sub(r'path = "([^"]+)"', lambda m: f'path = "{EXAMPLE_DIR / m.group(1)}"', text)
    for key, value in replacements.items():
        text, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert count == 1, f"no single line for {key}"
    return text


@pytest.fixture
def write_table(tmp_path: Path):
    """Write a DataFrame as CSV (or Parquet) under tmp_path and return its path."""

    def write(name: str, frame: pd.DataFrame, parquet: bool = False) -> Path:
        path = tmp_path / (f"{name}.parquet" if parquet else f"{name}.csv")
        if parquet:
            frame.to_parquet(path)
        else:
            frame.to_csv(path, index=False)
        return path

    return write


def synthetic_silo(rows: int, seed: int) -> pd.DataFrame:
    """A small tabular silo: two numeric features, one categorical, a learnable binary target."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(50, 10, rows)
    x2 = rng.normal(0, 1, rows)
    color = rng.choice(["red", "green", "blue"], rows)
    logit = 0.1 * (x1 - 50) + 1.5 * x2 + (color == "red") * 1.0
    y = (logit + rng.normal(0, 0.5, rows) > 0).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "color": color, "y": y})


def kept_in(text: str, folder: Path) -> str:
    """A pipeline text whose MLflow store and checkpoints live in ``folder`` (for in-process runs,
    whose working directory is the repository's)."""
    text = text.replace("sqlite:///mlruns.db", f"sqlite:///{folder / 'mlruns.db'}")
    return text.replace("[tracking]", f'[tracking]\ncheckpoints = "{folder / "checkpoints"}"')


def run_in_process(path: Path, rounds: int | None = None) -> tuple[dict[str, Any], str]:
    """``fedsilo run`` without the CLI process, on the session's Ray (``ray_local``): the run's
    summary and what it printed. Waits until the silos' actor names are free for the next run."""
    import io

    import ray
    from rich.console import Console

    from pipelines.runner import RunOptions, run_federation
    from pipelines.spec import load_pipeline

    out = io.StringIO()
    loaded = load_pipeline(path)
    summary = run_federation(loaded, RunOptions(rounds=rounds), Console(file=out, width=200))
    first = loaded.spec.silos[0].name
    deadline = time.monotonic() + 30  # killed actors' names are released a moment later
    while time.monotonic() < deadline:
        try:
            ray.get_actor(f"silo:{first}")
            time.sleep(0.2)
        except ValueError:
            break
    return summary.to_dict(), out.getvalue()
