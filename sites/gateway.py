"""The coordinator's gateway: one async Ray actor that listens (mutual TLS) for the sites'
outbound connections and routes each proxy's calls to its site. It routes bytes only: the
proxies (sites/proxy.py) encode and decode, so one big update does not hold up the others.

Every (re)connection first replays the run's ``open`` for that site (its terms and silo spec,
registered by the proxy), so a site that restarts mid-run comes back into the same run.
Failures are data: ``call`` answers ``(kind, body_or_message, rule)`` with kind "ok",
"refused", "failed" or "unavailable".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sites.tls import peer_name, peer_sha256, server_context
from sites.transport import VERSION, keepalive, read_message, read_sized, write_message
from sites.transport import field as envelope_field
from sites.wire import MAX_MESSAGE_BYTES, WireError

logger = logging.getLogger(__name__)

Answer = tuple[str, Any, str]  # (kind, body or message, rule)
HELLO_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class GatewaySettings:
    """[federation] as the gateway is constructed with it."""

    listen: str  # host:port the sites connect to (":port": every interface; port 0: any free port)
    certificate: str  # the coordinator's certificate (each site pins it) and key
    key: str
    ca: str  # CA certificate(s) that sign the sites' client certificates
    sites: tuple[str, ...]  # the remote silos of this federation: no other name is served
    limit: int = MAX_MESSAGE_BYTES
    pins: tuple[tuple[str, str], ...] = ()  # (site, sha256 of its certificate) for pinned sites
    bind_timeout_s: float = 30.0  # how long to wait for a port still held (a coordinator restarting)


class GatewayError(RuntimeError):
    """The gateway cannot start (its port is taken, its certificates unusable)."""


@dataclass
class _Connection:
    site: str
    fingerprint: str
    writer: asyncio.StreamWriter
    pending: dict[int, asyncio.Future[Answer]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    opened: asyncio.Future[Answer] | None = None  # the replayed ``open`` on this connection


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._ids = itertools.count(1)
        self._sites: dict[str, _Connection] = {}
        self._opens: dict[str, tuple[str, bytes]] = {}  # site -> (session, open body)
        self._traffic: dict[str, list[int]] = {}  # site -> [bytes to it, bytes from it], framing included
        self._changed: asyncio.Event | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; the port bound (useful with port 0)."""
        host, _, port = self._settings.listen.rpartition(":")
        s = self._settings
        context = server_context(Path(s.certificate), Path(s.key), Path(s.ca))
        self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.bind_timeout_s
        while self._server is None:
            try:
                self._server = await asyncio.start_server(self._serve, host or None, int(port), ssl=context)
            except OSError as err:  # a crashed coordinator's gateway may hold the port a while longer
                if err.errno != errno.EADDRINUSE or loop.time() > deadline:
                    raise GatewayError(
                        f"the gateway cannot listen on {s.listen}: {err.strerror or err}"
                    ) from None
                await asyncio.sleep(0.5)
        bound = int(self._server.sockets[0].getsockname()[1])
        logger.info("gateway listening on %s:%d for sites %s", host, bound, list(s.sites))
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._sites.values()):
            conn.writer.close()
        self._sites.clear()

    async def connected(self) -> dict[str, str]:
        """Connected sites and their certificates' fingerprints."""
        return {name: conn.fingerprint for name, conn in self._sites.items()}

    async def traffic(self) -> dict[str, tuple[int, int]]:
        """Bytes on the wire per site since the gateway started: (to the site, from the site)."""
        return {site: (sent, received) for site, (sent, received) in self._traffic.items()}

    def _count(self, site: str, sent: int = 0, received: int = 0) -> None:
        counts = self._traffic.setdefault(site, [0, 0])
        counts[0] += sent
        counts[1] += received

    async def register(self, site: str, session: str, body: bytes) -> None:
        """The run's ``open`` for ``site``: sent now if it is connected, and on every reconnection."""
        self._opens[site] = (session, body)
        conn = self._sites.get(site)
        if conn is not None:
            conn.opened = asyncio.ensure_future(self._send(conn, session, "open", body))
            self._notify()

    async def opened(self, site: str, timeout: float) -> Answer:
        """Wait (up to ``timeout``) for ``site`` to connect and answer the run's ``open``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            conn = await self._connection(site, deadline, opened=True)
            if conn is None or conn.opened is None:
                return ("unavailable", f"site {site!r} did not connect within {timeout:g}s", "")
            answer = await conn.opened
            if answer[0] != "unavailable":  # else it dropped while opening: wait for it again
                return answer

    async def _connection(self, site: str, deadline: float, opened: bool = False) -> _Connection | None:
        """``site``'s connection (with its open sent, if ``opened``) once there, or None at ``deadline``."""
        loop = asyncio.get_running_loop()
        assert self._changed is not None
        while True:
            conn = self._sites.get(site)
            if conn is not None and (conn.opened is not None or not opened):
                return conn
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))

    async def call(self, site: str, session: str, method: str, body: bytes) -> Answer:
        conn = self._sites.get(site)
        if conn is None:
            return ("unavailable", f"site {site!r} is not connected", "")
        if conn.opened is not None:
            answer = await conn.opened
            if answer[0] != "ok":
                return answer
        return await self._send(conn, session, method, body)

    async def ask(self, site: str, body: bytes, timeout: float) -> Answer:
        """A dry run: would ``site`` accept these terms? (no data is opened)."""
        conn = await self._connection(site, asyncio.get_running_loop().time() + timeout)
        if conn is None:
            return ("unavailable", f"site {site!r} did not connect within {timeout:g}s", "")
        return await self._send(conn, "", "ask", body)

    async def _send(self, conn: _Connection, session: str, method: str, body: bytes) -> Answer:
        ident = next(self._ids)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        conn.pending[ident] = future
        message = {"type": "call", "id": ident, "session": session, "method": method, "body": body}
        try:
            async with conn.lock:
                self._count(conn.site, sent=await write_message(conn.writer, message, self._settings.limit))
        except (OSError, ConnectionError, WireError) as err:
            conn.pending.pop(ident, None)
            return ("unavailable", f"site {conn.site!r}: sending {method} failed: {err}", "")
        return await future

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        keepalive(writer)
        ssl_object = writer.get_extra_info("ssl_object")
        name, fingerprint = peer_name(ssl_object), peer_sha256(ssl_object)
        peer = f"site {name!r} ({writer.get_extra_info('peername')})"
        try:
            hello = await asyncio.wait_for(read_message(reader, self._settings.limit, peer), HELLO_TIMEOUT_S)
            site = envelope_field(hello, "site", str, peer)
            refusal = self._admit(site, name, fingerprint, hello.get("version"))
            if refusal:
                logger.warning("gateway: refused %s: %s", peer, refusal)
                await write_message(writer, {"type": "refused", "message": refusal}, self._settings.limit)
                writer.close()
                return
            await write_message(writer, {"type": "welcome", "version": VERSION}, self._settings.limit)
        except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError, WireError) as err:
            logger.warning("gateway: %s did not complete its hello: %s", peer, err)
            writer.close()
            return
        conn = _Connection(site, fingerprint, writer)
        old = self._sites.pop(site, None)
        if old is not None:
            self._drop(old, "reconnected")
        self._sites[site] = conn
        if site in self._opens:
            session, body = self._opens[site]
            conn.opened = asyncio.ensure_future(self._send(conn, session, "open", body))
        logger.info("gateway: site %r connected", site)
        self._notify()
        await self._read(conn, reader, peer)

    def _admit(self, site: str, common_name: str, fingerprint: str, version: Any) -> str:
        if version != VERSION:
            return f"wire version {version!r} is not {VERSION}"
        if site != common_name:
            return f"the certificate is issued to {common_name!r}, not to site {site!r}"
        pinned = dict(self._settings.pins).get(site)
        if pinned is not None and fingerprint != pinned:
            return f"site {site!r} presented certificate sha256 {fingerprint[:16]}..., not the one pinned"
        if site not in self._settings.sites:
            return f"{site!r} is not a remote silo of this federation ({list(self._settings.sites)})"
        return ""

    async def _read(self, conn: _Connection, reader: asyncio.StreamReader, peer: str) -> None:
        reason = "disconnected"
        try:
            while True:
                message, size = await read_sized(reader, self._settings.limit, peer)
                self._count(conn.site, received=size)
                ident = envelope_field(message, "id", int, peer)
                future = conn.pending.pop(ident, None)
                if future is None or future.done():
                    continue
                if message["type"] == "result":
                    future.set_result(("ok", envelope_field(message, "body", bytes, peer), ""))
                else:
                    kind = str(message.get("kind", "failed"))
                    future.set_result((kind, str(message.get("message", "")), str(message.get("rule", ""))))
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as err:
            reason = f"disconnected ({type(err).__name__})"
        except WireError as err:
            reason = f"refused: {err}"
            logger.warning("gateway: %s", err)
        finally:
            if self._sites.get(conn.site) is conn:
                del self._sites[conn.site]
            self._drop(conn, reason)
            self._notify()

    def _drop(self, conn: _Connection, reason: str) -> None:
        for future in conn.pending.values():
            if not future.done():
                future.set_result(("unavailable", f"site {conn.site!r} {reason} during the call", ""))
        conn.pending.clear()
        conn.writer.close()
        logger.warning("gateway: site %r %s", conn.site, reason)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
