"""The orchestrator actor: sets the federation up, runs rounds, adds ciphertexts.

It holds the encryption parameters only: it can add and scale updates, never read one.
Made remote by the runner (``ray.remote(num_cpus=0.1)(Orchestrator)``) and driven one
call per round so the driver can show progress and log each round:

    orch.setup.remote() -> SetupReport; orch.run_round.remote(r) -> RoundRecord;
    orch.evaluate.remote() -> GlobalEval; orch.publish.remote(silo, request)

Every federated sum (two statistics passes at set-up, one per round) goes in two
steps: silos stage their vector and propose a range; the orchestrator sends the
largest range back and adds the signed encodings as they arrive, checking each
signature against the key the silo registered at set-up.
"""

from __future__ import annotations

import logging
import resource
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import ray
from ray.exceptions import RayError

from orchestrator.calls import arrivals, failure_reason, silo_gone
from orchestrator.errors import BudgetSpent, RoundFailed, SchemaMismatch, SetupFailed, SiloFailure
from orchestrator.metrics import Finalize, GlobalEval, combine
from orchestrator.pieces import StreamPlan, collect_pieces
from orchestrator.records import OrchestratorState, RoundRecord, SetupReport
from orchestrator.schema import agree
from orchestrator.secure_sum import deal, unmask
from orchestrator.selection import select
from orchestrator.server_step import Pieces, leader_step
from orchestrator.settings import OrchestratorSettings
from orchestrator.strategies import Aggregator, Strategy
from privacy.aggregate import WeightedSum, check_weight
from privacy.codec import Codec, CodecError, Payload, PlainCodec, check_payload, unmasked
from privacy.masking import Mask
from privacy.pieces import piece_ranges, piece_size
from privacy.schemes import public_codec
from privacy.secagg import OrchestratorKey, SecAggError
from privacy.secure_sum import SecureSumCodec
from privacy.signing import SignatureError, verify_update
from silo.data import SiloDescription
from silo.exchange import manifest_problems
from silo.messages import (
    Evaluation,
    FitIns,
    FitRes,
    KeyBundle,
    PublishedModel,
    PublishRequest,
    ServerStepIns,
    SiloKeys,
    SiloReady,
    StoredPayload,
    fetched,
)
from silo.preprocess import AgreedSchema

logger = logging.getLogger(__name__)


@dataclass
class _Collected:
    """One federated sum's outcome: the running sum, who is in it, who is not."""

    running: Aggregator
    accepted: list[str] = field(default_factory=list)
    failures: list[SiloFailure] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # silos whose update was refused (bad or forged)
    late: list[str] = field(default_factory=list)
    bytes_up: int = 0
    add_seconds: float = 0.0  # verifying signatures and adding ciphertexts, not waiting
    unmask: tuple[Mask, ...] = ()  # secure aggregation: the masks left in the sum, rebuilt


class Orchestrator:
    def __init__(self, silos: dict[str, Any], strategy: Strategy, settings: OrchestratorSettings) -> None:
        self._silos = dict(silos)
        self._strategy = strategy
        self._settings = settings
        self._codec: Codec | None = PlainCodec() if settings.he.scheme == "off" else None
        self._public_context: bytes | None = None
        self._signing: dict[str, bytes] = {}  # silo -> Ed25519 public key
        # Enc(global model); None until round 1 ends. Stored: a streamed sum's pieces (object refs)
        self._global: Payload | StoredPayload | None = None
        self._round = 0
        self._n_parameters = 0
        # Kept from set-up so that a restarted silo can rejoin without the others' help:
        self._schema: AgreedSchema | None = None
        self._stats: tuple[Payload, Payload] | None = None  # Enc(pass-1 sums), Enc(pass-2 sums)
        self._incarnations: dict[str, str] = {}
        self._peak_private = 0  # bytes, sampled while adding updates
        self._server_state: tuple[Payload | StoredPayload, ...] = ()  # Enc(m), Enc(v) of a server optimizer
        self._reference: Any = None  # plaintext mode with clip_norm: the initial model
        self._task_finalize: Finalize | None = None
        self._sealing: dict[str, bytes] = {}  # silo -> X25519 public key (secure aggregation)
        self._secagg_key = OrchestratorKey()  # signs each sum's survivor and dropped sets
        self._session_nonce = uuid.uuid4().hex[:12]  # sessions of this orchestrator never repeat

    # -- calling silos ---------------------------------------------------------

    def _call_all(
        self,
        method: str,
        args: Callable[[str], tuple[Any, ...]],
        timeout: float,
        names: list[str] | None = None,
    ) -> tuple[dict[str, Any], list[SiloFailure]]:
        chosen = list(self._silos) if names is None else names
        refs = {getattr(self._silos[name], method).remote(*args(name)): name for name in chosen}
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
        started = time.perf_counter()
        results, failures = self._call_all(method, args, self._settings.setup_timeout_s)
        logger.info("set-up step %r: %.2f s", step, time.perf_counter() - started)
        if failures:
            raise SetupFailed(step, failures)
        return results

    def _collect(
        self,
        phase: str,
        hints: dict[str, float],
        running: Aggregator,
        deadline: float,
        length: int | None,
        attempt: int = 1,
    ) -> _Collected:
        """Send the agreed range; verify and add each signed encoding as it arrives. Under
        secure aggregation the silos deal mask shares first and the masks left in the sum
        are rebuilt afterwards (`out.unmask`); `SecAggError` if too few silos stay."""
        assert self._codec is not None
        bound = max(hints.values())
        if self._streams(running, length):
            assert length is not None
            return self._collect_pieces(phase, list(hints), bound, length, deadline)
        out = _Collected(running)
        masked = None
        if self._settings.secagg:
            session = f"{self._session_nonce}/{phase}/{attempt}"
            masked = deal(
                self._silos, session, list(hints), self._settings.secagg_threshold, self._sealing,
                self._secagg_key, deadline,
            )  # fmt: skip
            out.failures += masked.failures
            out.bytes_up += sum(len(b) for d in masked.dealt.values() for b in d.shares.values())
            hints = {name: hints[name] for name in masked.members}
        extra = (masked.round,) if masked is not None else ()  # unmasked: the two-argument call
        refs = {self._silos[n].encode_staged.remote(f"{phase}/{n}", bound, *extra): n for n in hints}
        upload = self._upload_codec()
        for name, update in arrivals(refs, deadline):
            started = time.perf_counter()
            try:
                if isinstance(update, RayError):
                    raise update
                item = verify_update(update, name, f"{phase}/{name}", self._signing[name])
                check_payload(upload.name, item.payload, length, key_id=upload.key_id)
                check_weight(item.weight)
                running.add(item)  # streamed: one running sum, never every update at once
                self._sample_memory()
            except RayError as err:
                out.failures.append(SiloFailure(name, failure_reason(err)))
                continue
            except (CodecError, SignatureError, ValueError) as err:  # a bad update: refused, named
                out.failures.append(SiloFailure(name, f"update rejected: {failure_reason(err)}"))
                out.rejected.append(name)
                continue
            finally:
                out.add_seconds += time.perf_counter() - started
            out.accepted.append(name)
            out.bytes_up += item.payload.nbytes
        out.late = list(refs.values())  # a late upload is never added: the sets below are final
        if masked is not None:
            unmask_deadline = time.monotonic() + self._settings.status_timeout_s + self._settings.retry_wait_s
            out.unmask, failures = unmask(
                self._silos, masked, out.accepted, self._secagg_key, unmask_deadline
            )
            out.failures += failures
        return out

    def _streams(self, running: Aggregator, length: int | None) -> bool:
        """Whether this sum streams in pieces: an encrypted update larger than one piece, summed
        by a plain weighted sum (the robust rules and secure aggregation see whole updates)."""
        s = self._settings
        if s.piece_values <= 0 or s.secagg or length is None or not isinstance(running, WeightedSum):
            return False
        assert self._codec is not None
        return self._codec.name != "off" and length > s.piece_values

    def _collect_pieces(
        self, phase: str, names: list[str], bound: float, length: int, deadline: float
    ) -> _Collected:
        assert self._codec is not None
        codec, s = self._codec, self._settings
        piece_values = piece_size(s.piece_values, codec.chunk_values())
        plan = StreamPlan(phase, bound, length, piece_values, s.piece_window, codec, self._signing, deadline)
        streamed = collect_pieces(self._silos, names, plan, self._sample_memory)
        logger.info(
            "%s: %d pieces of %d values, %d pass(es), at most %d held as running sums",
            phase, len(piece_ranges(length, piece_values)), piece_values, streamed.passes, streamed.most_open,
        )  # fmt: skip
        return _Collected(
            streamed, streamed.accepted, streamed.failures, streamed.rejected, streamed.late,
            streamed.bytes_up, streamed.add_seconds,
        )  # fmt: skip

    def _setup_sum(self, step: str, phase: str, hints: dict[str, float]) -> tuple[Payload, int]:
        assert self._codec is not None
        deadline = time.monotonic() + self._settings.setup_timeout_s
        running = WeightedSum(self._upload_codec())
        try:
            out = self._collect(phase, hints, running, deadline, None)
        except SecAggError as err:
            raise SetupFailed(step, [SiloFailure("(secure aggregation)", str(err))]) from err
        failures = out.failures + [SiloFailure(n, "no answer in time") for n in out.late]
        if failures:
            raise SetupFailed(step, failures)
        return self._finish_sum(running.total(), out.unmask), out.bytes_up

    def _upload_codec(self) -> Codec:
        """What silos encode sums with: the federation's codec, or, for a secure sum without HE,
        masked integers that only the sum of all masks' silos decodes."""
        assert self._codec is not None
        if self._settings.secagg and self._codec.name == "off":
            return SecureSumCodec()
        return self._codec

    def _finish_sum(self, payload: Payload, masks: tuple[Mask, ...]) -> Payload:
        """The sum with the masks left in it: encrypted, they travel with it to the silos that
        decrypt; a secure sum without HE is decoded here, where only the aggregate is seen."""
        assert self._codec is not None
        upload = self._upload_codec()
        if upload is self._codec:
            return unmasked(payload, masks)
        return self._codec.encode(upload.decode(unmasked(payload, masks)))

    # -- set-up ------------------------------------------------------------------

    def setup(self) -> SetupReport:
        """Check data, agree the schema, register keys, compute federated statistics (a task:
        check every silo exchanges the same tensors over the same frozen base instead)."""
        start = time.perf_counter()
        described = self._setup_step("reading silo data", "describe", lambda _: ())
        descriptions = [described[name] for name in self._silos]
        if self._settings.task is not None:
            return self._setup_task(descriptions, start)
        schema = agree(descriptions)
        self._register_keys()
        step1 = "feature statistics (pass 1)"
        hints = self._setup_step(step1, "stats_sums", lambda _: (schema,))
        total, up1 = self._setup_sum(step1, "stats-1", hints)
        step2 = "feature statistics (pass 2)"
        total_ref = ray.put(total)  # one copy in the object store, read by every silo
        hints = self._setup_step(step2, "stats_squares", lambda _: (total_ref,))
        total_sq, up2 = self._setup_sum(step2, "stats-2", hints)
        total_sq_ref = ray.put(total_sq)
        ready: dict[str, SiloReady] = self._setup_step(
            "preparing local data", "finish_preprocessing", lambda _: (total_sq_ref,)
        )
        sizes = {r.n_parameters for r in ready.values()}
        if len(sizes) != 1:
            raise SetupFailed(
                "building the model",
                [SiloFailure(n, f"model has {r.n_parameters} parameters") for n, r in ready.items()],
            )
        self._n_parameters = sizes.pop()
        self._schema, self._stats = schema, (total, total_sq)
        return self._report(schema, descriptions, ready, start, up1 + up2,
                            len(self._silos) * (total.nbytes + total_sq.nbytes))  # fmt: skip

    def _register_keys(self) -> None:
        keys: dict[str, SiloKeys] = self._setup_step("registering silo keys", "public_keys", lambda _: ())
        self._signing = {name: k.signing for name, k in keys.items()}
        self._sealing = {name: k.sealing for name, k in keys.items()}
        if self._settings.secagg:
            key = self._secagg_key.public_bytes()
            self._setup_step("registering the orchestrator's key", "trust_orchestrator", lambda _: (key,))
        self._prepare_he(keys)

    def _setup_task(self, descriptions: list[SiloDescription], start: float) -> SetupReport:
        problems = [error for d in descriptions for error in d.errors]
        manifests = {d.name: d.manifest for d in descriptions if d.manifest is not None}
        problems = problems or manifest_problems(manifests)
        if problems:
            raise SchemaMismatch(problems)
        files = {d.task_sha256 for d in descriptions}
        if len(files) != 1:
            raise SchemaMismatch(
                [f"silo {d.name!r} runs task file {d.task_sha256[:12]}" for d in descriptions]
            )
        self._register_keys()
        ready: dict[str, SiloReady] = self._setup_step("preparing the task", "prepare_task", lambda _: ())
        self._n_parameters = ready[next(iter(self._silos))].n_parameters
        return self._report(None, descriptions, ready, start, 0, 0)

    def _report(
        self, schema: AgreedSchema | None, descriptions: list[SiloDescription], ready: dict[str, SiloReady],
        start: float, bytes_up: int, bytes_down: int,
    ) -> SetupReport:  # fmt: skip
        statuses = self._setup_step("checking silos", "status", lambda _: ())
        self._incarnations = {name: st.incarnation for name, st in statuses.items()}
        assert self._codec is not None
        return SetupReport(
            schema=schema,
            descriptions=tuple(descriptions),
            ready=tuple(ready[name] for name in self._silos),
            codec={**self._codec.describe(), "secagg": self._secagg_tag()},
            n_parameters=self._n_parameters,
            seconds=time.perf_counter() - start,
            bytes_up=bytes_up,
            bytes_down=bytes_down,
        )

    def _secagg_tag(self) -> str:
        s = self._settings
        if not s.secagg:
            return "off"
        return f"pairwise, threshold {s.secagg_threshold or 'floor(n/2)+1'} of each sum's silos"

    def _finalize(self) -> Finalize | None:
        """The task's finalize (its file, loaded here once); None: the tables' figures."""
        if self._settings.task is None:
            return None
        if self._task_finalize is None:
            self._task_finalize = self._settings.task.load().finalize
        return self._task_finalize

    def _prepare_he(self, keys: dict[str, SiloKeys]) -> None:
        """Provisioned keys: check every silo holds them. Otherwise one silo makes a fresh
        key set and seals it to each peer; we relay bytes we cannot open."""
        he = self._settings.he
        if he.scheme == "off":
            return
        if self._settings.provisioned_public is not None:
            public, key_id = self._settings.provisioned_public
            wrong = [
                SiloFailure(n, f"holds HE key {k.he_key_id or '(none)'}, the provisioned key is {key_id}")
                for n, k in keys.items()
                if k.he_key_id != key_id
            ]
            if wrong:
                raise SetupFailed("checking provisioned HE keys", wrong)
        else:
            keygen = next(iter(self._silos))
            try:
                bundle: KeyBundle = ray.get(
                    self._silos[keygen].generate_he_keys.remote({n: k.sealing for n, k in keys.items()}),
                    timeout=self._settings.setup_timeout_s,
                )
            except RayError as err:
                raise SetupFailed("generating HE keys", [SiloFailure(keygen, failure_reason(err))]) from err
            public, key_id = bundle.public_context, bundle.key_id
            peers = [n for n in self._silos if n != keygen]
            installed, failures = self._call_all(
                "install_he_keys", lambda n: (bundle.sealed[n],), self._settings.setup_timeout_s, peers
            )
            failures += [
                SiloFailure(n, f"installed key {installed[n]}, expected {key_id}")
                for n in peers
                if n in installed and installed[n] != key_id
            ]
            if failures:
                raise SetupFailed("installing HE keys", failures)
        self._codec = public_codec(he, public, key_id)
        self._public_context = public

    # -- silos that restarted --------------------------------------------------------

    def _rejoin(self, name: str, donors: list[str]) -> None:
        """A restarted silo: reload its data, give it the HE key (sealed by a healthy peer),
        register its new signing key, rebuild its preprocessing from the stored sums."""
        assert self._codec is not None
        handle, timeout = self._silos[name], self._settings.setup_timeout_s
        description = ray.get(handle.describe.remote(), timeout=timeout)
        if description.errors:
            raise CodecError("; ".join(description.errors))
        keys: SiloKeys = ray.get(handle.public_keys.remote(), timeout=timeout)
        if self._settings.he.scheme != "off" and keys.he_key_id != self._codec.key_id:
            if self._settings.provisioned_public is not None or not donors:
                raise CodecError(
                    f"holds HE key {keys.he_key_id or '(none)'}, the federation's is {self._codec.key_id}"
                )
            sealed = ray.get(self._silos[donors[0]].seal_key_for.remote(name, keys.sealing), timeout=timeout)
            installed = ray.get(handle.install_he_keys.remote(sealed), timeout=timeout)
            if installed != self._codec.key_id:
                raise CodecError(f"installed key {installed}, expected {self._codec.key_id}")
        stats = self._stats or (None, None)
        ready: SiloReady = ray.get(handle.rejoin.remote(self._schema, *stats), timeout=timeout)
        if ready.n_parameters != self._n_parameters:
            raise CodecError(
                f"model has {ready.n_parameters} parameters, the federation's {self._n_parameters}"
            )
        self._signing[name] = keys.signing
        self._sealing[name] = keys.sealing
        if self._settings.secagg:
            ray.get(handle.trust_orchestrator.remote(self._secagg_key.public_bytes()), timeout=timeout)
        self._incarnations[name] = ray.get(handle.status.remote(), timeout=timeout).incarnation

    def _refresh(self) -> tuple[list[str], list[str], list[SiloFailure]]:
        """(silos able to train now, silos that rejoined, failures): asks every silo who it is."""
        statuses, failures = self._call_all("status", lambda _: (), self._settings.status_timeout_s)
        failures = [SiloFailure(f.silo, f"unavailable: {f.reason}") for f in failures]
        active = [n for n, st in statuses.items() if st.ready and st.incarnation == self._incarnations.get(n)]
        rejoined = []
        for name in [n for n in statuses if n not in active]:
            try:
                self._rejoin(name, active)
            except (RayError, CodecError) as err:
                failures.append(SiloFailure(name, f"restarted but could not rejoin: {failure_reason(err)}"))
                continue
            logger.warning("silo %s restarted and rejoined", name)
            active.append(name)
            rejoined.append(name)
        return active, rejoined, failures

    # -- rounds --------------------------------------------------------------------

    def run_round(self, server_round: int) -> RoundRecord:
        """One round, tried again (``round_retries``) while fewer than min_silos take part."""
        assert self._codec is not None, "setup() must run first"
        for attempt in range(1, self._settings.round_retries + 2):
            try:
                return self._run_round(server_round, attempt)
            except RoundFailed as err:
                if attempt > self._settings.round_retries:
                    raise
                logger.warning("round %d, attempt %d failed (%s); retrying", server_round, attempt, err)
                time.sleep(self._settings.retry_wait_s)
        raise AssertionError("unreachable")

    def _run_round(self, server_round: int, attempt: int) -> RoundRecord:
        assert self._codec is not None
        start = time.perf_counter()
        active, rejoined, unavailable = self._refresh()
        s = self._settings
        chosen = select(active, s.fraction, s.min_silos, s.selection_seed, server_round, attempt)
        deadline = time.monotonic() + s.round_timeout_s
        ins = FitIns(server_round, self._global, self._strategy.configure_fit(server_round))
        ins_ref = ray.put(ins)  # the global model goes into the object store once, not once per silo
        refs = {self._silos[name].fit.remote(ins_ref): name for name in chosen}
        bytes_down = len(refs) * (self._global.nbytes if self._global else 0)
        trained: dict[str, FitRes] = {}
        failures: list[SiloFailure] = list(unavailable)
        spent: dict[str, FitRes] = {}  # silos that refused: their privacy budget is spent
        for name, res in arrivals(refs, deadline):
            if isinstance(res, RayError):
                failures.append(SiloFailure(name, failure_reason(res)))
            elif res.has_error():
                failures.append(SiloFailure(name, str(res.error)))
                if res.budget_spent:
                    spent[name] = res
            else:
                trained[name] = res
        if spent and len(trained) < self._settings.min_silos:  # retrying would not help
            raise BudgetSpent(self._round, sorted(spent), [f for f in failures if f.silo in spent])
        late = list(refs.values())
        accepted: list[str] = []
        answered = len(trained)  # until updates are collected: who trained in time
        bytes_up, add_seconds = 0, 0.0
        running = self._strategy.aggregator(self._upload_codec(), self._plain_reference(active))
        rejected: list[str] = []
        masks: tuple[Mask, ...] = ()
        if len(trained) >= self._settings.min_silos:
            hints = {name: res.bound_hint for name, res in trained.items()}
            # round_timeout_s bounds training; encoding with the agreed range gets a window of its own.
            encode_deadline = time.monotonic() + self._settings.round_timeout_s
            length = self._strategy.payload_length(self._n_parameters)
            try:
                out = self._collect(f"round-{server_round}", hints, running, encode_deadline, length, attempt)
            except SecAggError as err:  # too few silos left to unmask: the round is tried again
                failures.append(SiloFailure("(secure aggregation)", str(err)))
                raise RoundFailed(server_round, len(trained), self._settings.min_silos, failures) from err
            accepted, bytes_up, add_seconds = out.accepted, out.bytes_up, out.add_seconds
            running = out.running  # streamed in pieces: the finished sum
            rejected, masks = out.rejected, out.unmask
            answered = len(accepted)
            failures += out.failures
            late += out.late
        failures += [
            SiloFailure(name, f"late: no update within {self._settings.round_timeout_s}s") for name in late
        ]
        if len(accepted) < self._settings.min_silos:
            raise RoundFailed(server_round, answered, self._settings.min_silos, failures)
        started = time.perf_counter()
        mean = running.mean()  # streamed in pieces: already finished, in the object store
        average = mean if isinstance(mean, StoredPayload) else self._finish_sum(mean, masks)
        add_seconds += time.perf_counter() - started
        opt = self._strategy.server_opt
        reseed = self._codec.name == "packed" and len(average.terms) > self._settings.reseed_above
        if opt is None and not reseed:
            self._global = average
        else:
            step_ins = ServerStepIns(server_round, average, self._global, self._server_state, opt)
            s = self._settings
            streams = s.piece_values > 0 and self._codec.name != "off"  # plaintext vectors move whole
            step = leader_step(
                self._silos, accepted, step_ins, self._signing, self._codec,
                self._strategy.payload_length(self._n_parameters), s.round_timeout_s, failure_reason,
                Pieces(s.piece_values, s.piece_window) if streams else None,
            )  # fmt: skip
            failures += step.failures
            if step.global_payload is None and opt is None:  # no re-encryption: the seeds stay
                step = replace(step, global_payload=average)
            if step.global_payload is None:
                raise RoundFailed(server_round, 0, 1, failures)
            self._global, self._server_state = step.global_payload, step.state
            bytes_up += step.bytes_up
            bytes_down += average.nbytes + sum(p.nbytes for p in (self._server_state or ()))
        self._round = server_round
        for failure in failures:
            logger.warning("round %d: silo %s left out: %s", server_round, failure.silo, failure.reason)
        evaluations = [r.evaluation for r in trained.values() if r.evaluation is not None]
        answers = {**trained, **spent}
        return RoundRecord(
            round=server_round,
            participants=tuple(accepted),
            failures=tuple(failures),
            late=tuple(late),
            seconds=time.perf_counter() - start,
            bytes_up=bytes_up,
            bytes_down=bytes_down,
            train_loss={name: trained[name].train_loss for name in accepted},
            train_seconds={name: trained[name].seconds for name in accepted},
            incoming=combine(server_round - 1, evaluations, self._finalize()) if evaluations else None,
            rejoined=tuple(rejoined),
            attempts=attempt,
            aggregate_seconds=add_seconds,
            rejected=tuple(rejected),
            epsilon={n: r.epsilon for n, r in answers.items() if r.epsilon is not None},
            noise_multiplier={n: r.noise_multiplier for n, r in answers.items() if r.noise_multiplier},
            idle=tuple(n for n in active if n not in chosen),
        )

    def evaluate(self) -> GlobalEval:
        """Every silo scores the current global model on its validation rows."""
        global_ref = ray.put(self._global)  # once, not once per silo
        results, failures = self._call_all(
            "evaluate", lambda _: (global_ref,), self._settings.round_timeout_s
        )
        for failure in failures:
            logger.warning("evaluation: silo %s left out: %s", failure.silo, failure.reason)
        evaluations: list[Evaluation] = [results[n] for n in self._silos if n in results]
        return combine(self._round, evaluations, self._finalize())

    def publish(self, silo: str, request: PublishRequest) -> PublishedModel:
        """The publishing silo decrypts the global model and registers it."""
        if self._global is None:
            raise RuntimeError("no round has completed; nothing to publish")
        failures: list[SiloFailure] = []
        for name in [silo, *(n for n in self._silos if n != silo)]:
            try:
                return ray.get(self._silos[name].publish.remote(self._global, request))
            except RayError as err:
                failures.append(SiloFailure(name, failure_reason(err)))
                if not silo_gone(err):  # a failure any silo would meet (the registry, say)
                    break
                logger.warning("silo %s cannot publish (%s); asking the next", name, failures[-1].reason)
        raise SetupFailed("publishing the model", failures)

    def _plain_reference(self, active: list[str]) -> Any:
        """Plaintext mode with clip_norm: the global model the orchestrator bounds updates
        around (round 1: the seeded initial model, asked of a silo). None otherwise."""
        if self._codec is None or self._codec.name != "off" or self._strategy.clip_norm <= 0:
            return None
        if self._global is not None:
            return self._codec.decode(fetched(self._global))[: self._n_parameters]
        if self._reference is None and active:
            try:
                ref = self._silos[active[0]].initial_weights.remote()
                payload = ray.get(ref, timeout=self._settings.setup_timeout_s)
                self._reference = self._codec.decode(payload)
            except (RayError, CodecError) as err:
                logger.warning("no initial model for clip_norm in round 1: %s", failure_reason(err))
        return self._reference

    # -- checkpoints ------------------------------------------------------------------

    def state(self) -> OrchestratorState:
        assert self._codec is not None, "setup() must run first"
        return OrchestratorState(
            self._round, self._global, self._public_context, self._codec.key_id, self._server_state
        )  # a stored global's pieces: the caller fetches them (`checkpoint.save` needs bytes)

    def restore(self, state: OrchestratorState) -> None:
        """Continue after ``state.round`` (set-up with the checkpoint's key must have run)."""
        assert self._codec is not None, "setup() must run first"
        if state.key_id != self._codec.key_id:
            raise CodecError(
                f"checkpoint was encrypted under key {state.key_id}, silos hold {self._codec.key_id}"
            )
        self._round, self._global = state.round, state.global_payload
        self._server_state = getattr(state, "server_state", ())  # checkpoints older than server optimizers

    # -- introspection (tests, tags) ---------------------------------------------------

    def public_context(self) -> bytes | None:
        """The HE context this actor holds, serialized: parameters only, no secret key."""
        return self._public_context

    def can_decrypt(self) -> bool:
        return bool(getattr(self._codec, "can_decrypt", True))

    def peak_memory_bytes(self) -> dict[str, int]:
        """Peak resident memory ("rss", which counts pages of Ray's shared object store this
        process touched while reading updates) and peak private memory ("private", sampled
        after every addition: what this process itself holds)."""
        return {
            "rss": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
            "private": self._peak_private,
        }

    def _sample_memory(self) -> None:
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("RssAnon:"):
                        self._peak_private = max(self._peak_private, int(line.split()[1]) * 1024)
        except OSError:  # not Linux: no sample
            pass
