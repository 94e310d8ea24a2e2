"""`fedsilo run --address`: nothing at the address is a clear error, and the token mode is
chosen only when a token exists. Joining a cluster started with `ray start --head` runs in
test_secure_cluster.py (token and TLS, as infra/ starts one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import prepare_ray_auth
from tests.conftest import example_pipeline_text, free_port

pytestmark = pytest.mark.slow


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
