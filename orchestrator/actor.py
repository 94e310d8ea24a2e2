"""The orchestrator actor: sets the federation up, runs rounds, adds ciphertexts.

It holds a public CKKS context only: it can add and scale updates, never read one.
Made remote by the runner (``ray.remote(num_cpus=0.1)(Orchestrator)``) and driven
one call per round so the driver can show progress and log each round:

    orch.setup.remote() -> SetupReport; orch.run_round.remote(r) -> RoundRecord;
    orch.evaluate.remote() -> GlobalEval; orch.publish.remote(silo, request)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

from orchestrator.errors import RoundFailed, SetupFailed, SiloFailure
from orchestrator.metrics import GlobalEval, combine
from orchestrator.records import RoundRecord, SetupReport
from orchestrator.schema import agree
from orchestrator.settings import OrchestratorSettings
from orchestrator.strategies import Strategy
from privacy.aggregate import WeightedPayload, WeightedSum
from privacy.codec import Codec, CodecError, Payload, PlainCodec, check_payload
from privacy.he import public_codec
from silo.messages import Evaluation, FitIns, FitRes, KeyBundle, PublishedModel, PublishRequest, SiloReady

logger = logging.getLogger(__name__)


def failure_reason(err: BaseException) -> str:
    """One line for a failed silo call, never a Ray traceback."""
    if isinstance(err, RayTaskError):
        cause = err.cause
        return f"{type(cause).__name__}: {cause}" if cause is not None else str(err).splitlines()[0]
    if isinstance(err, RayActorError):
        return "silo actor is unavailable (process died, node lost or actor killed)"
    if isinstance(err, GetTimeoutError):
        return "no answer in time"
    return f"{type(err).__name__}: {err}"


class Orchestrator:
    def __init__(self, silos: dict[str, Any], strategy: Strategy, settings: OrchestratorSettings) -> None:
        self._silos = dict(silos)
        self._strategy = strategy
        self._settings = settings
        self._codec: Codec | None = PlainCodec() if settings.he == "off" else None
        self._global: Payload | None = None  # Enc(global model); None until round 1 ends
        self._round = 0
        self._n_parameters = 0

    # -- calling silos ---------------------------------------------------------

    def _call_all(
        self, method: str, args: Callable[[str], tuple[Any, ...]], timeout: float
    ) -> tuple[dict[str, Any], list[SiloFailure]]:
        refs = {getattr(h, method).remote(*args(name)): name for name, h in self._silos.items()}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        results: dict[str, Any] = {}
        failures = [SiloFailure(refs[r], f"no answer within {timeout:.0f}s") for r in pending]
        for ref in ready:
            try:
                results[refs[ref]] = ray.get(ref)
            except RayError as err:
                failures.append(SiloFailure(refs[ref], failure_reason(err)))
        return results, failures

    def _setup_step(self, step: str, method: str, args: Callable[[str], tuple[Any, ...]]) -> dict[str, Any]:
        results, failures = self._call_all(method, args, self._settings.setup_timeout_s)
        if failures:
            raise SetupFailed(step, failures)
        return results

    def _federated_sum(self, parts: dict[str, WeightedPayload]) -> Payload:
        assert self._codec is not None
        running = WeightedSum(self._codec)
        for item in parts.values():
            running.add(item)
        return running.total()

    # -- set-up ------------------------------------------------------------------

    def setup(self) -> SetupReport:
        """Check data, agree the schema, exchange HE keys, compute federated statistics."""
        start = time.perf_counter()
        described = self._setup_step("reading silo data", "describe", lambda _: ())
        schema = agree([described[name] for name in self._silos])
        if self._settings.he == "ckks":
            self._exchange_keys()
        sums = self._setup_step("feature statistics (pass 1)", "stats_sums", lambda _: (schema,))
        total = self._federated_sum(sums)
        squares = self._setup_step("feature statistics (pass 2)", "stats_squares", lambda _: (total,))
        total_sq = self._federated_sum(squares)
        ready: dict[str, SiloReady] = self._setup_step(
            "preparing local data", "finish_preprocessing", lambda _: (total_sq,)
        )
        sizes = {r.n_parameters for r in ready.values()}
        if len(sizes) != 1:
            raise SetupFailed(
                "building the model",
                [SiloFailure(n, f"model has {r.n_parameters} parameters") for n, r in ready.items()],
            )
        self._n_parameters = sizes.pop()
        n = len(self._silos)
        up = sum(p.payload.nbytes for p in [*sums.values(), *squares.values()])
        down = n * (total.nbytes + total_sq.nbytes)
        assert self._codec is not None
        return SetupReport(
            schema=schema,
            descriptions=tuple(described[name] for name in self._silos),
            ready=tuple(ready[name] for name in self._silos),
            codec=self._codec.describe(),
            n_parameters=self._n_parameters,
            seconds=time.perf_counter() - start,
            bytes_up=up,
            bytes_down=down,
        )

    def _exchange_keys(self) -> None:
        """One silo makes the CKKS keys and seals them to each peer; we relay sealed bytes."""
        publics = self._setup_step("sealing keys", "sealing_public_key", lambda _: ())
        keygen = next(iter(self._silos))
        try:
            bundle: KeyBundle = ray.get(
                self._silos[keygen].generate_he_keys.remote(publics), timeout=self._settings.setup_timeout_s
            )
        except RayError as err:
            raise SetupFailed("generating HE keys", [SiloFailure(keygen, failure_reason(err))]) from err
        self._codec = public_codec(bundle.public_context, self._settings.ckks)
        self._public_context = bundle.public_context
        peers = {name: h for name, h in self._silos.items() if name != keygen}
        refs = {peers[name].install_he_keys.remote(bundle.sealed[name]): name for name in peers}
        failures: list[SiloFailure] = []
        for ref, name in refs.items():
            try:
                ray.get(ref, timeout=self._settings.setup_timeout_s)
            except RayError as err:
                failures.append(SiloFailure(name, failure_reason(err)))
        if failures:
            raise SetupFailed("installing HE keys", failures)

    # -- rounds --------------------------------------------------------------------

    def _accept(self, res: FitRes) -> WeightedPayload:
        """Check an update's envelope before it is added; raise `CodecError` naming the fault."""
        if res.update is None:
            raise CodecError("no update")
        assert self._codec is not None
        check_payload(self._codec.name, res.update.payload, self._n_parameters)
        if not res.update.weight > 0:
            raise CodecError(f"non-positive weight {res.update.weight}")
        return res.update

    def run_round(self, server_round: int) -> RoundRecord:
        assert self._codec is not None, "setup() must run first"
        start = time.perf_counter()
        ins = FitIns(server_round, self._global, self._strategy.configure_fit(server_round))
        refs = {h.fit.remote(ins): name for name, h in self._silos.items()}
        bytes_down = len(refs) * (self._global.nbytes if self._global else 0)
        running = self._strategy.aggregator(self._codec)
        deadline = time.monotonic() + self._settings.round_timeout_s
        pending = list(refs)
        answered: list[FitRes] = []
        failures: list[SiloFailure] = []
        bytes_up = 0
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, pending = ray.wait(pending, num_returns=1, timeout=remaining)
            for ref in ready:
                name = refs[ref]
                try:
                    res: FitRes = ray.get(ref)
                    if res.has_error():
                        raise CodecError(res.error)
                    update = self._accept(res)
                    running.add(update)  # streamed: one running sum, never every update at once
                except (RayError, CodecError) as err:
                    failures.append(SiloFailure(name, failure_reason(err)))
                    continue
                bytes_up += update.payload.nbytes
                answered.append(res)
        late = tuple(refs[ref] for ref in pending)
        failures += [
            SiloFailure(name, f"late: no update within {self._settings.round_timeout_s}s") for name in late
        ]
        if len(answered) < self._settings.min_silos:
            raise RoundFailed(server_round, len(answered), self._settings.min_silos, failures)
        self._global = running.mean()
        self._round = server_round
        evaluations = [r.evaluation for r in answered if r.evaluation is not None]
        for failure in failures:
            logger.warning("round %d: silo %s left out: %s", server_round, failure.silo, failure.reason)
        return RoundRecord(
            round=server_round,
            participants=tuple(r.silo for r in answered),
            failures=tuple(failures),
            late=late,
            seconds=time.perf_counter() - start,
            bytes_up=bytes_up,
            bytes_down=bytes_down,
            train_loss={r.silo: r.train_loss for r in answered},
            incoming=combine(server_round - 1, evaluations) if evaluations else None,
        )

    def evaluate(self) -> GlobalEval:
        """Every silo scores the current global model on its validation rows."""
        results, failures = self._call_all(
            "evaluate", lambda _: (self._global,), self._settings.round_timeout_s
        )
        for failure in failures:
            logger.warning("evaluation: silo %s left out: %s", failure.silo, failure.reason)
        evaluations: list[Evaluation] = [results[n] for n in self._silos if n in results]
        return combine(self._round, evaluations)

    def publish(self, silo: str, request: PublishRequest) -> PublishedModel:
        """The publishing silo decrypts the global model and registers it."""
        if self._global is None:
            raise RuntimeError("no round has completed; nothing to publish")
        try:
            return ray.get(self._silos[silo].publish.remote(self._global, request))
        except RayError as err:
            raise SetupFailed("publishing the model", [SiloFailure(silo, failure_reason(err))]) from err

    # -- introspection (tests, tags) ---------------------------------------------------

    def public_context(self) -> bytes | None:
        """The HE context this actor holds, serialized: parameters only, no secret key."""
        return getattr(self, "_public_context", None)

    def can_decrypt(self) -> bool:
        return bool(getattr(self._codec, "can_decrypt", True))
