"""Run a pipeline as a Ray job on a cluster (Ray's Job Submission SDK), streaming its logs.

    fedsilo submit pipeline.toml --address http://HEAD:8265 [--rounds 5] [--no-wait]

What travels: only the pipeline file (the job's ``working_dir`` is a folder holding
``pipeline.toml``). fedsilo itself must be installed on the cluster's nodes, and silo data
never moves: each silo reads its path on its own node. So the pipeline's silo paths must be
absolute (paths on the silo nodes), and ``[tracking] mlflow_uri`` a server or an absolute
sqlite path: relative paths would resolve in the job's temporary working folder.
The job runs ``fedsilo run pipeline.toml --address auto`` on the cluster.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from orchestrator.errors import FederationError
from pipelines.spec import LoadedPipeline, PipelineError

logger = logging.getLogger(__name__)

AGENT_WAIT_S = 90.0  # how long a freshly started head may take to accept jobs


class SubmitError(FederationError):
    """The job could not be submitted or followed; the message says where and why."""


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str  # PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED (RUNNING with --no-wait)
    message: str = ""


def check_portable(loaded: LoadedPipeline) -> None:
    """Paths that would resolve in the job's temporary working folder instead of where data is."""
    problems = [
        f"{loaded.path.name}: silos.{i}.path: {s.path!r} is relative; a submitted job would look for it "
        f"in its temporary working folder: give the absolute path on silo {s.name}'s node"
        for i, s in enumerate(loaded.spec.silos)
        if not Path(s.path).expanduser().is_absolute()
    ]
    uri = loaded.spec.tracking.mlflow_uri
    if (uri.startswith("sqlite:///") and not uri.startswith("sqlite:////")) or "://" not in uri:
        problems.append(
            f"{loaded.path.name}: tracking.mlflow_uri: {uri!r} is a relative path; the job would write it "
            "into its temporary working folder: use an MLflow server (http://...) or an absolute path"
        )
    if loaded.spec.privacy.keys is not None and not Path(loaded.spec.privacy.keys).is_absolute():
        problems.append(f"{loaded.path.name}: privacy.keys: {loaded.spec.privacy.keys!r} must be absolute")
    if problems:
        raise PipelineError(loaded.path, problems)


def _check_dashboard(address: str, timeout_s: float = 5.0) -> None:
    url = urlparse(address if "://" in address else f"http://{address}")
    try:
        socket.create_connection((url.hostname or "", url.port or 8265), timeout=timeout_s).close()
    except OSError as err:
        raise SubmitError(
            f"cannot submit to {address}: nothing answers there ({err.strerror or err}). Give the head's "
            "dashboard address (http://HEAD:8265; `ray start --head --include-dashboard true`)."
        ) from None


def entrypoint(rounds: int | None, extra: list[str] | None = None) -> str:
    args = ["fedsilo", "run", "pipeline.toml", "--address", "auto", "--tag", "fedsilo.trigger=ray-job"]
    if rounds is not None:
        args += ["--rounds", str(rounds)]
    return " ".join([*args, *(extra or [])])


def submit(
    loaded: LoadedPipeline,
    address: str,
    rounds: int | None = None,
    wait: bool = True,
    echo: Callable[[str], None] = print,
    timeout_s: float | None = None,
) -> JobOutcome:
    """Submit; with ``wait``, stream the job's logs and return its final status."""
    check_portable(loaded)
    _check_dashboard(address)
    from ray.exceptions import RayError
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError, RayError) as err:
        raise SubmitError(f"cannot submit to {address}: {_first_line(err)}") from None
    job_id = f"fedsilo-{loaded.spec.name}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="fedsilo-job-") as folder:
        (Path(folder) / "pipeline.toml").write_text(loaded.text)
        runtime_env: dict[str, Any] = {"working_dir": folder}
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                client.submit_job(
                    entrypoint=entrypoint(rounds),
                    submission_id=job_id,
                    runtime_env=runtime_env,
                    metadata={"fedsilo.pipeline": loaded.spec.name},
                )
                break
            except (RuntimeError, RayError) as err:
                # A head that has just started answers before its job agent is up: wait for it.
                if "No available agent" in str(err) and time.monotonic() < deadline:
                    logger.info("the head's job agent is not up yet; retrying")
                    time.sleep(2)
                    continue
                raise SubmitError(f"cannot submit to {address}: {_first_line(err)}") from None
    echo(f"submitted Ray job {job_id} to {address}")
    try:
        if not wait:
            return JobOutcome(job_id, str(client.get_job_status(job_id).value))
        asyncio.run(_stream(client, job_id, echo, timeout_s))
        deadline = time.monotonic() + 60
        status = client.get_job_status(job_id)
        while not status.is_terminal() and time.monotonic() < deadline:  # logs end a moment before status
            time.sleep(0.5)
            status = client.get_job_status(job_id)
        info = client.get_job_info(job_id)
    except (RuntimeError, RayError, OSError, TimeoutError) as err:
        raise SubmitError(
            f"lost track of Ray job {job_id} at {address}: {_first_line(err)} "
            f"(it may still be running: `ray job status {job_id} --address {address}`)"
        ) from None
    return JobOutcome(job_id, str(status.value), info.message or "")


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


async def _stream(client: Any, job_id: str, echo: Callable[[str], None], timeout_s: float | None) -> None:
    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            for line in lines.rstrip("\n").split("\n"):
                echo(line)

    await asyncio.wait_for(follow(), timeout=timeout_s)
