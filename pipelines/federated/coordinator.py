"""The coordinator's side of federated clusters: the gateway the sites connect to, one proxy
actor ``silo:<name>`` per remote silo, the run's terms each site judges, and the dry run.

    fedsilo run PIPELINE                      # [federation] + remote silos: sites must be serving
    fedsilo validate PIPELINE --against-sites # would each site accept this run? (no data opened)
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import ray

from orchestrator.errors import FederationError
from pipelines import build
from pipelines.spec import LoadedPipeline
from silo.config import SiloSpec
from sites.gateway import Gateway, GatewayError, GatewaySettings
from sites.proxy import SiloProxy
from sites.terms import Refusal, RunTerms, task_id
from sites.tls import TLSError
from sites.wire import dumps, loads

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteAnswer:
    """A site's answer to a run (joining it, or the dry run): refused or unreachable names why."""

    site: str
    kind: str  # ok | refused | unavailable | failed
    message: str = ""
    rule: str = ""

    @property
    def accepted(self) -> bool:
        return self.kind == "ok"


def terms(loaded: LoadedPipeline, run_id: str) -> RunTerms:
    spec = loaded.spec
    dp = spec.privacy.dp != "off"
    return RunTerms(
        run_id=run_id,
        pipeline=spec.name,
        pipeline_sha256=hashlib.sha256(loaded.text.encode()).hexdigest(),
        task=task_id(build.task_spec(loaded)),
        model=spec.model.kind if spec.task is None else "",  # a [task] builds its own: judged by its hash
        he=spec.privacy.he,
        secagg=spec.secagg,
        dp=spec.privacy.dp,
        epsilon=spec.privacy.target_epsilon if dp else None,
        delta=spec.privacy.delta if dp else None,
        min_silos=spec.min_silos,
        rounds=spec.rounds,
        silos=len(spec.silos),
    )


def start_gateway(loaded: LoadedPipeline, namespace: str) -> tuple[Any, int]:
    """The gateway actor, listening: (handle, port)."""
    f = loaded.spec.federation
    assert f is not None, "remote silos need [federation] (the schema checks it)"
    settings = GatewaySettings(
        listen=f.listen,
        certificate=loaded.resolve(f.certificate),
        key=loaded.resolve(f.key),
        ca=loaded.resolve(f.ca),
        sites=tuple(loaded.spec.remote_silos),
        limit=f.max_message_mb * 2**20,
        pins=tuple((s.name, s.certificate_sha256) for s in loaded.spec.silos if s.certificate_sha256),
    )
    actor: Any = ray.remote(Gateway)
    handle = actor.options(namespace=namespace, num_cpus=0).remote(settings)
    try:
        port: int = ray.get(handle.start.remote())
    except ray.exceptions.RayTaskError as err:
        ray.kill(handle)
        cause = err.cause
        raise FederationError(
            str(cause) if isinstance(cause, GatewayError | TLSError) else str(err)
        ) from None
    return handle, port


def proxy(spec: SiloSpec, run: RunTerms, gateway: Any, namespace: str) -> Any:
    return (
        ray.remote(SiloProxy)
        .options(name=f"silo:{spec.name}", namespace=namespace, num_cpus=0, max_restarts=0)
        .remote(spec, run, gateway)
    )


def join(proxies: dict[str, Any], timeout: float) -> list[SiteAnswer]:
    """Every remote site's answer to the run, in parallel (each waits for its site to connect)."""
    refs = {name: handle.join.remote(timeout) for name, handle in proxies.items()}
    return [SiteAnswer(name, *ray.get(ref)) for name, ref in refs.items()]


def ask_sites(loaded: LoadedPipeline, namespace: str) -> list[SiteAnswer]:
    """The dry run: each connected site judges the run's terms; nothing is opened."""
    gateway, port = start_gateway(loaded, namespace)
    assert loaded.spec.federation is not None
    try:
        run = terms(loaded, "(dry run)")
        timeout = loaded.spec.federation.connect_timeout_s
        refs = {s: gateway.ask.remote(s, dumps(run), timeout) for s in loaded.spec.remote_silos}
        answers = []
        for site, ref in refs.items():
            kind, body, rule = ray.get(ref)
            if kind != "ok":
                answers.append(SiteAnswer(site, kind, body, rule))
                continue
            refusals: tuple[Refusal, ...] = loads(body)  # type: ignore[assignment]
            if refusals:
                message = "; ".join(r.message() for r in refusals)
                answers.append(SiteAnswer(site, "refused", message, ", ".join(r.rule for r in refusals)))
            else:
                answers.append(SiteAnswer(site, "ok"))
        return answers
    finally:
        ray.get(gateway.stop.remote())
        ray.kill(gateway)
