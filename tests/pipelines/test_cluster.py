"""`fedsilo run --address` joins a cluster started with `ray start --head`, as a user starts one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.cli import prepare_ray_auth
from tests.conftest import example_pipeline_text, free_port, ray_head

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_head_address() -> Iterator[str]:
    """A head started by `ray start --block`, stopped by the test."""
    with ray_head("--include-dashboard", "false") as port:
        yield f"127.0.0.1:{port}"


def test_run_joins_an_existing_cluster(ray_head_address: str, tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(example_pipeline_text(he='"off"'))
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", str(pipeline), "--address", ray_head_address,
         "--rounds", "2", "--summary-json", "s.json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["rounds_completed"] == 2 and summary["registered_model"]["version"] == "1"


def test_no_cluster_at_the_address_is_a_clear_error(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(example_pipeline_text())
    nowhere = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", str(pipeline), "--address", nowhere],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot join the Ray cluster at 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_token_mode_is_chosen_only_when_a_token_exists(tmp_path: Path) -> None:
    token = tmp_path / "token"
    env: dict[str, str] = {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "absent")}
    prepare_ray_auth(env)
    assert "RAY_AUTH_MODE" not in env
    token.write_text("x" * 32)
    env = {"RAY_AUTH_TOKEN_PATH": str(token)}
    prepare_ray_auth(env)
    assert env["RAY_AUTH_MODE"] == "token"
    env = {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "abc"}
    prepare_ray_auth(env)
    assert env["RAY_AUTH_MODE"] == "disabled"
