"""The Ray side of a run: start or join Ray, place the silo actors, start (or replace) the
orchestrator, and turn failed calls into domain errors."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import ray

from orchestrator.actor import Orchestrator, failure_reason
from orchestrator.errors import FederationError
from orchestrator.records import SetupReport
from pipelines import build, checkpoint, placement
from pipelines.federated import coordinator as remote_sites
from pipelines.spec import LoadedPipeline
from silo.config import SiloSpec

logger = logging.getLogger(__name__)


def unwrap(err: BaseException) -> BaseException:
    """The domain error inside a Ray task error, so users see our message, not Ray's traceback."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at a host:port address."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms: leave them to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise FederationError(
            f"cannot join the Ray cluster at {address}: nothing answers there ({err.strerror or err}). "
            "Start one with infra/ray-head.sh, or leave out --address to run on a local Ray."
        ) from None


def _join_cluster(address: str, namespace: str, log_to_driver: bool) -> None:
    """Join an existing cluster (the CLI has already chosen the auth mode: `prepare_ray_auth`)."""
    _check_reachable(address)
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=log_to_driver)
    except ConnectionError as err:
        raise FederationError(
            f"cannot join the Ray cluster at {address}: {err}. Is it running (`ray status --address "
            f"{address}`)? If it uses token authentication, set RAY_AUTH_TOKEN or ~/.ray/auth_token."
        ) from None


def start_ray(namespace: str, address: str | None, log_to_driver: bool) -> bool:
    """Join ``address`` or start a local Ray; True when this call started it (and must stop it)."""
    if ray.is_initialized():
        return False
    if address:
        _join_cluster(address, namespace, log_to_driver)
    else:
        ray.init(
            address="local",  # always a fresh local instance, never someone else's cluster
            num_cpus=max(2, os.cpu_count() or 2),
            namespace=namespace,
            include_dashboard=False,
            log_to_driver=log_to_driver,
            _node_ip_address="127.0.0.1",
        )
    return True


class Federation:
    """The actors of one run. The orchestrator can be replaced (it died, or the run resumes)
    from the last state: silos keep or reload the run's HE key, and set-up runs again."""

    def __init__(
        self,
        loaded: LoadedPipeline,
        run_id: str,
        checkpoints: Path,
        resume: bool,
        warm_start: tuple[str, str] | None = None,  # see build.silo_specs
        tracking_uri: str | None = None,  # the run's MLflow store (the publishing silo opens it early)
        known_key: tuple[bytes, str] | None = None,  # the run's HE key (a resumed run)
        orchestrate: bool = True,  # start the orchestrator now (its process boots beside the silos')
    ) -> None:
        spec = loaded.spec
        self._loaded = loaded
        self._namespace = ray.get_runtime_context().namespace
        self.placement = placement.plan(spec, ray.cluster_resources())
        from silo.actor import silo_actor  # torch and pandas: imported while Ray starts (early.py)

        silo_cls = silo_actor()

        def backup(silo: str) -> str:
            return checkpoint.key_backup_path(checkpoints, run_id, silo)

        def dp_state(silo: str) -> str:
            return checkpoint.privacy_state_path(checkpoints, run_id, silo)

        specs = build.silo_specs(
            loaded, backup, resume, dp_state=dp_state, warm_start=warm_start, tracking_uri=tracking_uri
        )
        remote = self._remote = set(spec.remote_silos)  # served by their sites (_join_sites)
        self.silos: dict[str, Any] = {
            s.name: silo_cls.options(
                name=f"silo:{s.name}",
                namespace=self._namespace,
                num_cpus=self.placement[s.name].num_cpus,
                num_gpus=self.placement[s.name].num_gpus,
                resources=self.placement[s.name].resources,
                max_restarts=spec.resources.silo_restarts,
            ).remote(s)
            for s in specs
            if s.name not in remote
        }
        self.gateway: Any = None
        self.site_answers: list[remote_sites.SiteAnswer] = []  # refusals and absences: the run goes on
        self.orchestrator: Any = None
        try:
            if remote:
                self._join_sites(run_id, [s for s in specs if s.name in remote])
            if orchestrate:
                self._spawn_orchestrator(known_key)
            self._wait_placed(spec.resources.placement_timeout_s)
        except BaseException:
            self.stop()  # pending actors would keep their names (silo:<name>) taken
            raise

    def _join_sites(self, run_id: str, specs: list[SiloSpec]) -> None:
        """Start the gateway, one proxy per remote silo, and keep the sites that accept the run."""
        spec = self._loaded.spec
        assert spec.federation is not None
        self.gateway, port = remote_sites.start_gateway(self._loaded, self._namespace)
        logger.info("gateway listening on port %d for sites %s", port, spec.remote_silos)
        run = remote_sites.terms(self._loaded, run_id)
        proxies = {s.name: remote_sites.proxy(s, run, self.gateway, self._namespace) for s in specs}
        self.silos.update(proxies)
        for answer in remote_sites.join(proxies, spec.federation.connect_timeout_s):
            if not answer.accepted:
                logger.warning("site %s is left out of this run: %s", answer.site, answer.message)
                self.site_answers.append(answer)
                ray.kill(self.silos.pop(answer.site))
        order = [s.name for s in spec.silos]  # the pipeline's order: the same sums, bit for bit
        self.silos = {name: self.silos[name] for name in order if name in self.silos}
        if len(self.silos) < spec.min_silos:
            reasons = "\n  ".join(f"{a.site}: {a.message}" for a in self.site_answers)
            raise FederationError(
                f"only {len(self.silos)} silo(s) can take part but min_silos = {spec.min_silos}:\n  {reasons}"
            )

    def _wait_placed(self, timeout: float) -> None:
        """Every silo placed and started within ``timeout``, or a clear error naming the silos."""
        refs = {h.status.remote(): name for name, h in self.silos.items() if name not in self._remote}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        failed: list[str] = []
        for ref in ready:
            try:
                ray.get(ref)
            except ray.exceptions.RayError as err:
                failed.append(f"silo {refs[ref]!r} failed to start: {failure_reason(err)}")
        failed += [
            f"silo {refs[r]!r} was not placed within {timeout:g}s: no node has free "
            f"{{{self.placement[refs[r]].demand()}}}"
            for r in pending
        ]
        if failed:
            raise placement.PlacementError("\n  ".join(["silos could not start:", *failed]))

    def setup(self) -> SetupReport:
        """The orchestrator's set-up (data checks, keys, statistics); it is started if it is not."""
        if self.orchestrator is None:
            self._spawn_orchestrator(None)
        return get(self.orchestrator.setup.remote())

    def start_orchestrator(self, known_key: tuple[bytes, str] | None) -> SetupReport:
        """A new orchestrator (the last one died, or none was started), set up."""
        self._spawn_orchestrator(known_key)
        return self.setup()

    def _spawn_orchestrator(self, known_key: tuple[bytes, str] | None) -> None:
        if self.orchestrator is not None:
            ray.kill(self.orchestrator)
        settings = build.orchestrator_settings(self._loaded, known_key)
        actor = ray.remote(Orchestrator).options(
            name="orchestrator",
            namespace=self._namespace,
            num_cpus=self._loaded.spec.resources.orchestrator_cpus,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.orchestrator = actor.remote(self.silos, build.strategy(self._loaded), settings)
                break
            except ValueError:  # a killed orchestrator's name is released a moment after it died
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def traffic(self) -> dict[str, tuple[int, int]]:
        """Bytes on the wire per remote site so far: (to the site, from the site); {} without sites."""
        if self.gateway is None:
            return {}
        traffic: dict[str, tuple[int, int]] = get(self.gateway.traffic.remote())
        return traffic

    def stop(self) -> None:
        if self.gateway is not None:
            try:
                ray.get(self.gateway.stop.remote(), timeout=10)
            except ray.exceptions.RayError as err:
                logger.warning("the gateway did not stop cleanly: %s", failure_reason(err))
        for handle in [
            *self.silos.values(),
            *(h for h in (self.orchestrator, self.gateway) if h is not None),
        ]:
            ray.kill(handle)


def get(ref: Any) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        return raise_domain(err)


def orchestrator_died(err: BaseException) -> bool:
    return isinstance(err, ray.exceptions.RayActorError) and not isinstance(err, ray.exceptions.RayTaskError)


def raise_domain(err: BaseException) -> Any:
    """Re-raise a failed orchestrator call as the domain error it carries, never Ray's traceback."""
    cause = unwrap(err)
    if isinstance(cause, FederationError):
        raise cause from None
    if orchestrator_died(err):
        raise FederationError(f"the orchestrator died: {err}") from None
    raise FederationError(failure_reason(err)) from None
