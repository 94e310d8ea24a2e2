"""A site: its own Ray, its silo actor on its own data, one outbound TLS connection to the
coordinator, and its policy and audit log in front of every request.

    fedsilo site serve --site SITE.toml

The site never imports or runs anything the coordinator names: it runs its installed fedsilo,
and a task module only when the sha256 of the bytes it was sent is in ``approved_tasks``.
Every request is judged by the policy (sites/policy.py) and written to the audit log
(sites/audit.py) before the answer leaves. The connection is retried with backoff, so a
coordinator that restarts (``fedsilo run --resume``) finds its sites again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import replace
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from orchestrator.calls import failure_reason
from silo.actor import silo_actor
from silo.config import SiloSpec
from sites.audit import AuditEntry, AuditLog, describe_result, utc_now
from sites.config import LoadedSite, SiteError, load_site
from sites.policy import check_answer, check_call, check_terms
from sites.proxy import SILO_METHODS
from sites.terms import Refusal, RunTerms, task_id
from sites.tls import client_context, peer_sha256
from sites.transport import VERSION, field, keepalive, read_message, write_message
from sites.wire import MAX_MESSAGE_BYTES, WireError, dumps, loads

logger = logging.getLogger(__name__)

SILO_RESTARTS = 3  # Ray restarts a crashed silo actor; the orchestrator sees a new incarnation


def provisioned(spec: SiloSpec) -> bool:
    """The run uses out-of-band keys (`fedsilo keys init`), not a fresh or backed-up run key."""
    return spec.he_secret_path is not None and spec.he_secret_path != spec.he_key_backup_path


def request_round(args: tuple[Any, ...]) -> int | None:
    """The round a request belongs to, for the audit: a FitIns's, or a ``round-<r>/...`` tag's."""
    first = args[0] if args else None
    if isinstance(first, str) and first.startswith("round-"):
        number = first.removeprefix("round-").split("/", 1)[0]
        return int(number) if number.isdigit() else None
    value = getattr(first, "round", None)
    return value if isinstance(value, int) else None


class SiteServer:
    def __init__(self, site: LoadedSite, limit: int = MAX_MESSAGE_BYTES) -> None:
        self._site = site
        self._name = site.config.site.name
        self._limit = limit
        self._audit = AuditLog(site.audit_path)
        self._ssl = client_context(site.tls_certificate, site.tls_key)
        self._session = ""
        self._terms: RunTerms | None = None
        self._silo: Any = None
        self._coordinator = ""

    async def serve_forever(self) -> None:
        """Connect, serve until the connection ends, reconnect with backoff; forever."""
        delay = 0.5
        while True:
            try:
                if await self._serve_once():
                    delay = 0.5
            except (ConnectionRefusedError, asyncio.IncompleteReadError) as err:  # between runs: normal
                logger.info(
                    "site %s: coordinator %s: %s", self._name, self._address, err or type(err).__name__
                )
            except (OSError, ConnectionError, TimeoutError, WireError) as err:  # TLS refused, a bad peer
                logger.warning(
                    "site %s: coordinator %s: %s", self._name, self._address, err or type(err).__name__
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._site.config.coordinator.reconnect_max_s)

    @property
    def _address(self) -> str:
        return self._site.config.coordinator.address

    def _trusted(self, fingerprint: str) -> bool:
        return fingerprint == self._site.pinned_sha256 or fingerprint in self._site.config.policy.coordinators

    async def _serve_once(self) -> bool:
        """One connection; True when the coordinator welcomed this site."""
        host, _, port = self._address.rpartition(":")
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=self._ssl, server_hostname=host), 30
        )
        keepalive(writer)
        try:
            fingerprint = peer_sha256(writer.get_extra_info("ssl_object"))
            if not self._trusted(fingerprint):
                presented = f"certificate sha256 {fingerprint[:16]}..., not the pinned one"
                refusal = Refusal(self._name, "coordinators", f"{self._address} presented {presented}")
                self._record("connect", None, refusal=refusal, coordinator=fingerprint)
                logger.error("%s", refusal.message())
                return False
            self._coordinator = fingerprint
            await write_message(
                writer, {"type": "hello", "site": self._name, "version": VERSION}, self._limit
            )
            welcome = await asyncio.wait_for(read_message(reader, self._limit, "the coordinator"), 30)
            if welcome["type"] != "welcome":
                logger.error("site %s: the coordinator refused it: %s", self._name, welcome.get("message"))
                return False
            logger.info("site %s: connected to the coordinator at %s", self._name, self._address)
            lock = asyncio.Lock()
            tasks: set[asyncio.Task[None]] = set()
            while True:
                message = await read_message(reader, self._limit, "the coordinator")
                task = asyncio.create_task(self._answer(message, writer, lock))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            writer.close()

    async def _answer(
        self, message: dict[str, Any], writer: asyncio.StreamWriter, lock: asyncio.Lock
    ) -> None:
        peer = "the coordinator"
        ident = field(message, "id", int, peer)
        method = field(message, "method", str, peer)
        start = time.perf_counter()
        try:
            reply = await self._handle(
                method, field(message, "session", str, peer), field(message, "body", bytes, peer)
            )
        except WireError as err:
            reply = self._error("failed", f"site {self._name!r}: {err}", "")
        except OSError as err:  # the audit log cannot be written: nothing leaves unrecorded
            logger.error("site %s: the audit log %s cannot be written: %s", self._name, self._audit.path, err)
            reply = self._error("unavailable", f"site {self._name!r} cannot write its audit log", "audit_log")
        async with lock:
            await write_message(writer, {**reply, "id": ident}, self._limit)
        elapsed_ms = 1e3 * (time.perf_counter() - start)
        logger.debug("site %s: %s answered in %.1f ms", self._name, method, elapsed_ms)

    async def _handle(self, method: str, session: str, body: bytes) -> dict[str, Any]:
        if method in ("ask", "open"):
            self._reload()
        if method == "ask":
            terms = loads(body, limit=self._limit)
            if not isinstance(terms, RunTerms):
                raise WireError("an ask carries RunTerms")
            refusals = check_terms(self._site, terms, self._coordinator)
            lines: list[Refusal | None] = [*refusals] or [None]
            for refusal in lines:  # one line per rule broken: the officer sees them all
                self._record("ask", terms, refusal=refusal, detail="dry run")
            return {"type": "result", "body": dumps(tuple(refusals))}
        if method == "open":
            return await self._open(session, body)
        if method not in SILO_METHODS:
            return self._refuse(Refusal(self._name, "method", f"{method!r} is not a silo method"), method)
        return await self._call(method, session, body)

    def _reload(self) -> None:
        """The officer edits SITE.toml (approves a task, tightens the floor): the next run sees it."""
        try:
            self._site = load_site(self._site.path)
        except SiteError as err:
            logger.error(
                "site %s: SITE.toml is invalid now, keeping the policy loaded before: %s", self._name, err
            )

    async def _open(self, session: str, body: bytes) -> dict[str, Any]:
        opened = loads(body, limit=self._limit)
        if not (isinstance(opened, tuple) and len(opened) == 2 and isinstance(opened[0], RunTerms)
                and isinstance(opened[1], SiloSpec)):  # fmt: skip
            raise WireError("an open carries (RunTerms, SiloSpec)")
        terms, spec = opened
        refusals = check_terms(self._site, terms, self._coordinator)
        if spec.name != self._name:
            refusals.append(Refusal(self._name, "site", f"the run asks for silo {spec.name!r}"))
        if task_id(spec.task) != terms.task:
            refusals.append(
                Refusal(self._name, "approved_tasks", "the task sent is not the one the run declares")
            )
        if provisioned(spec) and self._site.he_secret_key is None:
            refusals.append(
                Refusal(self._name, "he_secret_key", "the run uses provisioned HE keys; none here")
            )
        if refusals:
            self._record("open", terms, refusal=refusals[0], detail="; ".join(r.detail for r in refusals))
            return self._error("refused", "; ".join(r.message() for r in refusals), refusals[0].rule)
        if session != self._session or self._silo is None:
            if self._silo is not None:
                ray.kill(self._silo)
            self._silo = self._start_silo(spec)
            self._session, self._terms = session, terms
        self._record("open", terms, detail=f"run {terms.run_id} opened")
        return {"type": "result", "body": dumps(None)}

    def _start_silo(self, spec: SiloSpec) -> Any:
        c = self._site.config.site
        state = self._site.state_dir

        def local(
            path: str | None, suffix: str
        ) -> str | None:  # the coordinator names it; the site places it
            return str(state / f"{hashlib.sha256(path.encode()).hexdigest()[:20]}{suffix}") if path else None

        state.mkdir(parents=True, exist_ok=True)
        backup = local(spec.he_key_backup_path, ".he-key")
        secret = str(self._site.he_secret_key) if provisioned(spec) else None
        local_spec = replace(
            spec,
            path=str(self._site.data_path),
            # a resumed run reads the run's key from this site's backup; provisioned keys from its file
            he_secret_path=secret if provisioned(spec) else (backup if spec.he_secret_path else None),
            he_key_backup_path=backup,
            dp_state_path=local(spec.dp_state_path, ".dp.json"),
            workers=max(1, int(c.num_cpus)),
        )
        actor = silo_actor(num_cpus=c.num_cpus, num_gpus=c.num_gpus)
        return actor.options(max_restarts=SILO_RESTARTS).remote(local_spec)

    async def _call(self, method: str, session: str, body: bytes) -> dict[str, Any]:
        terms = self._terms
        if session != self._session or terms is None or self._silo is None:
            return self._error("unavailable", f"site {self._name!r} has no open run for this session", "")
        args = loads(body, limit=self._limit)
        if not isinstance(args, tuple):
            raise WireError("a call carries a tuple of arguments")
        refusal = check_call(self._site, terms, method, args)
        if refusal is not None:
            return self._refuse(refusal, method, terms)
        try:
            result = await getattr(self._silo, method).remote(*args)
        except RayTaskError as err:
            reason = failure_reason(err)
            self._record(method, terms, outcome="failed", detail=reason)
            return self._error("failed", reason, "")
        except RayActorError as err:
            self._record(method, terms, outcome="failed", detail="the silo actor died")
            return self._error("unavailable", f"site {self._name!r}: its silo actor died: {err}", "")
        refusal = check_answer(self._site, method, result)
        if refusal is not None:
            return self._refuse(refusal, method, terms)
        out = dumps(result, limit=self._limit)
        facts = describe_result(method, result)
        if facts.get("round") is None:
            facts["round"] = request_round(args)
        self._record(method, terms, bytes_out=len(out), **facts)
        return {"type": "result", "body": out}

    def _refuse(self, refusal: Refusal, method: str, terms: RunTerms | None = None) -> dict[str, Any]:
        self._record(method, terms or self._terms, refusal=refusal)
        logger.warning("%s", refusal.message())
        return self._error("refused", refusal.message(), refusal.rule)

    @staticmethod
    def _error(kind: str, message: str, rule: str) -> dict[str, Any]:
        return {"type": "error", "kind": kind, "message": message, "rule": rule}

    def _record(
        self,
        method: str,
        terms: RunTerms | None,
        refusal: Refusal | None = None,
        outcome: str = "served",
        detail: str = "",
        coordinator: str | None = None,
        **facts: Any,
    ) -> None:
        """One audit line, written (and synced) before the answer leaves."""
        self._audit.record(
            AuditEntry(
                time=utc_now(),
                site=self._name,
                coordinator=coordinator if coordinator is not None else self._coordinator,
                run_id=terms.run_id if terms else "",
                round=facts.get("round"),
                pipeline=terms.pipeline if terms else "",
                pipeline_sha256=terms.pipeline_sha256 if terms else "",
                task=terms.task if terms else "",
                method=method,
                outcome="refused" if refusal else outcome,
                rule=refusal.rule if refusal else None,
                detail=refusal.detail if refusal else detail,
                rows_read=facts.get("rows_read"),
                data_sha256=facts.get("data_sha256"),
                bytes_out=int(facts.get("bytes_out", 0)),
                metrics=tuple(facts.get("metrics", ())),
                epsilon=facts.get("epsilon"),
            )
        )


def serve(site: LoadedSite, address: str | None = None) -> None:
    """`fedsilo site serve`: start or join the site's Ray, then serve until interrupted."""
    c = site.config.site
    target = address or c.ray_address
    if target:
        ray.init(address=target, namespace=f"fedsilo-site-{c.name}", log_to_driver=False)
    else:
        ray.init(
            address="local",
            num_cpus=max(2, int(c.num_cpus) + 1),
            num_gpus=int(c.num_gpus + 0.999),  # whole GPUs for Ray; the silo takes num_gpus of them
            namespace=f"fedsilo-site-{c.name}",
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    coordinator = site.config.coordinator.address
    logger.info(
        "site %s: serving %s to %s; audit log %s", c.name, site.data_path, coordinator, site.audit_path
    )
    try:
        asyncio.run(SiteServer(site, limit=c.max_message_mb * 2**20).serve_forever())
    finally:
        ray.shutdown()
