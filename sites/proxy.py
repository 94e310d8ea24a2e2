"""A remote site's silo as the orchestrator sees it: an actor named ``silo:<name>`` in the
coordinator's cluster with the silo's methods, each forwarded through the gateway to the site.

    ray.remote(SiloProxy).options(name="silo:cleveland").remote(spec, terms, gateway)

Arguments and results cross as wire messages (sites/wire.py, no pickle); a site's refusal, a
failed silo call and a lost connection come back as domain errors the orchestrator reports
as it reports a dead actor: the silo is left out of that step, named, with the reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from privacy.pieces import join, piece_ranges
from silo.config import SiloSpec
from silo.errors import SiloUnavailable
from silo.messages import StoredPayload
from sites.terms import RunTerms
from sites.wire import dumps, loads

# SiloWorker's public methods: what a proxy forwards (a test checks the list is complete).
# `encode_staged_pieces`, a streaming generator, is the proxy's own: one forwarded
# `encode_staged_piece` call per piece.
SILO_METHODS = (
    "status", "describe", "prepare_task", "public_keys", "generate_he_keys", "seal_key_for",
    "install_he_keys", "encode_staged", "encode_staged_piece", "trust_orchestrator", "deal_masks",
    "unmask", "stats_sums", "stats_squares", "finish_preprocessing", "rejoin", "fit", "initial_weights",
    "server_step", "evaluate", "score_models", "publish",
)  # fmt: skip


class SiteError(RuntimeError):
    """A call a remote site did not answer with a result."""


class SiteRefused(SiteError, SiloUnavailable):
    """The site's policy refused the request; the message names the site and the rule."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class SiteUnavailable(SiteError, SiloUnavailable):
    """The site is not connected, or its connection dropped during the call."""


class SiteCallFailed(SiteError):
    """The site's silo raised (bad data, a task error): its message, as the site reported it."""


def _raise(kind: str, message: str, rule: str) -> Any:
    if kind == "refused":
        raise SiteRefused(message, rule)
    if kind == "failed":
        raise SiteCallFailed(message)
    raise SiteUnavailable(message)


class SiloProxy:
    def __init__(self, spec: SiloSpec, terms: RunTerms, gateway: Any) -> None:
        self.name = spec.name
        self._gateway = gateway
        self._session = uuid.uuid4().hex  # a new run (or a resumed one) is a new session at the site
        self._open = dumps((terms, spec))

    async def join(self, timeout: float) -> tuple[str, str, str]:
        """Register the run with the gateway and wait for the site to accept it: (kind, message, rule)."""
        await self._gateway.register.remote(self.name, self._session, self._open)
        kind, message, rule = await self._gateway.opened.remote(self.name, timeout)
        return kind, (message if kind != "ok" else ""), rule

    async def encode_staged_pieces(
        self, tag: str, bound: float, piece_values: int, length: int
    ) -> AsyncIterator[Any]:
        """As the silo's: each piece asked of the site on its own, streamed back as it comes."""
        for index in range(len(piece_ranges(length, piece_values))):
            yield await self._forward("encode_staged_piece", (tag, bound, piece_values, index, length))

    async def _forward(self, method: str, args: tuple[Any, ...]) -> Any:
        args = tuple([await _with_bytes(arg) for arg in args])
        kind, body, rule = await self._gateway.call.remote(self.name, self._session, method, dumps(args))
        if kind != "ok":
            return _raise(kind, body, rule)
        return loads(body)


async def _with_bytes(arg: Any) -> Any:
    """``arg`` with every stored payload in it (object refs, which cannot leave this cluster)
    fetched and joined: the site receives the bytes, as for any payload."""
    if isinstance(arg, StoredPayload):
        return join(list(await asyncio.gather(*arg.pieces)))
    if isinstance(arg, tuple) and any(isinstance(item, StoredPayload) for item in arg):
        return tuple([await _with_bytes(item) for item in arg])  # a server optimizer's state
    if dataclasses.is_dataclass(arg) and not isinstance(arg, type):
        changes = {}
        for f in dataclasses.fields(arg):
            value = getattr(arg, f.name)
            if (fetched := await _with_bytes(value)) is not value:
                changes[f.name] = fetched
        return dataclasses.replace(arg, **changes) if changes else arg
    return arg


def _forwarder(method: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def forward(self: SiloProxy, *args: Any) -> Any:
        return await self._forward(method, args)

    forward.__name__ = forward.__qualname__ = method
    return forward


for _method in SILO_METHODS:
    setattr(SiloProxy, _method, _forwarder(_method))
