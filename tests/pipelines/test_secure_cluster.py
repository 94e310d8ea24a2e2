"""A cluster with token authentication and mutual TLS (infra/): a federation runs on it, a
client without the token is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import example_pipeline_text, ray_head

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TOKEN = "fedsilo-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def secure_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from ray._private.services import get_node_ip_address

    certs = tmp_path_factory.mktemp("certs")
    subprocess.run(
        [sys.executable, str(REPO / "infra" / "tls" / "make_certs.py"), "--out", str(certs),
         "--node", f"head={get_node_ip_address()}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return {
        **os.environ,
        "RAY_USE_TLS": "1",
        "RAY_TLS_CA_CERT": str(certs / "ca.crt"),
        "RAY_TLS_SERVER_CERT": str(certs / "head.crt"),
        "RAY_TLS_SERVER_KEY": str(certs / "head.key"),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": TOKEN,
    }


@pytest.fixture(scope="module")  # one head for both tests
def secure_head(secure_env: dict[str, str]) -> Iterator[str]:
    with ray_head("--include-dashboard", "false", env=secure_env) as port:
        yield f"127.0.0.1:{port}"


def _start(folder: Path, address: str, env: dict[str, str]) -> subprocess.Popen[str]:
    folder.mkdir(exist_ok=True)
    pipeline = folder / "pipeline.toml"
    pipeline.write_text(example_pipeline_text())
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", str(pipeline), "--address", address, "--rounds", "2",
         "--summary-json", "s.json"],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _run(folder: Path, address: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _finish(_start(folder, address, env))


def test_a_federation_runs_on_a_token_and_tls_cluster(secure_head: str, secure_env, tmp_path: Path) -> None:
    result = _run(tmp_path, secure_head, secure_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "registered heart-disease-classifier version 1" in result.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["rounds_completed"] == 2 and summary["registered_model"]["version"] == "1"


def test_a_client_without_the_token_is_refused(secure_head: str, secure_env, tmp_path: Path) -> None:
    no_token = {k: v for k, v in secure_env.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    no_token["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "no-such-token")  # not ~/.ray/auth_token either
    wrong = {**secure_env, "RAY_AUTH_TOKEN": "not-the-token"}
    # Both clients at once: each spends most of its time in Ray's connection retries
    clients = [
        _start(tmp_path / "none", secure_head, no_token),
        _start(tmp_path / "wrong", secure_head, wrong),
    ]
    result, wrong_result = (_finish(c) for c in clients)
    assert result.returncode == 1
    assert f"cannot join the Ray cluster at {secure_head}" in result.stderr
    assert "Traceback" not in result.stderr
    assert wrong_result.returncode == 1 and "Traceback" not in wrong_result.stderr, wrong_result.stderr[-999:]
