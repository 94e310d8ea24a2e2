"""Framing on the coordinator <-> site connection: a 4-byte length, then one wire message
(sites/wire.py: a fixed schema, no pickle). A frame over the limit is refused before it is read.

Envelopes are dicts with a ``type``:
    site -> coordinator   hello {site, version}, result {id, body}, error {id, kind, message, rule}
    coordinator -> site   welcome {}, refused {message}, call {id, session, method, body}
``body`` is itself a wire message (a call's arguments, a method's result), encoded and decoded
by the proxy and the site, so the gateway only routes bytes.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

from sites.wire import WireError, dumps, loads

VERSION = 1
HEADER = struct.Struct(">I")


async def read_message(reader: asyncio.StreamReader, limit: int, peer: str) -> dict[str, Any]:
    """The next message; IncompleteReadError at end of stream, WireError (naming ``peer``) for a
    frame over ``limit`` or one that is not a wire envelope."""
    return (await read_sized(reader, limit, peer))[0]


async def read_sized(reader: asyncio.StreamReader, limit: int, peer: str) -> tuple[dict[str, Any], int]:
    """`read_message`, and the bytes it took on the wire."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > limit:
        raise WireError(f"{peer} sent a message of {size} bytes, over the limit of {limit} bytes")
    try:
        message = loads(await reader.readexactly(size), limit=limit)
    except WireError as err:
        raise WireError(f"{peer} sent a message that is refused: {err}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise WireError(f"{peer} sent a message without a type")
    return message, HEADER.size + size


async def write_message(writer: asyncio.StreamWriter, message: dict[str, Any], limit: int) -> int:
    """Send one message; the bytes it took on the wire."""
    data = dumps(message, limit=limit)
    writer.write(HEADER.pack(len(data)))
    writer.write(data)
    await writer.drain()
    return HEADER.size + len(data)


def field(message: dict[str, Any], name: str, kind: type, peer: str) -> Any:
    """A required envelope field of the expected type, or a WireError naming the peer."""
    value = message.get(name)
    if not isinstance(value, kind):
        raise WireError(f"{peer} sent a {message.get('type')!r} message without a valid {name!r}")
    return value


def keepalive(writer: asyncio.StreamWriter, idle_s: int = 30, interval_s: int = 10, probes: int = 3) -> None:
    """TCP keepalive on the connection: a peer that vanished without closing it (a cable pulled, a
    firewall's idle timeout) is noticed in about a minute, not when the next call times out."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", idle_s), ("TCP_KEEPINTVL", interval_s), ("TCP_KEEPCNT", probes)):
        if hasattr(socket, option):  # Linux; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
