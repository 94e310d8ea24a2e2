"""The gateway and a site's connection, in one event loop: real TLS on 127.0.0.1, no Ray.

pytest tests/sites/test_gateway.py
"""

from __future__ import annotations

import asyncio
import pickle
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipelines.federated import local as kit
from sites.audit import read_audit
from sites.config import fingerprint, load_site
from sites.gateway import Gateway, GatewayError, GatewaySettings
from sites.serve import SiteServer
from sites.terms import Refusal, RunTerms
from sites.tls import client_context
from sites.transport import HEADER, read_message, write_message
from sites.wire import dumps, loads

LIMIT = 2**20


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = kit.certificates(tmp_path_factory.mktemp("certs"), ["coordinator", "cleveland", "hungary"])
    kit.certificates(folder / "rogue", ["cleveland", "coordinator"], ca_name="someone else's CA")
    return folder


def gateway(certs: Path, pins: tuple[tuple[str, str], ...] = ()) -> Gateway:
    return Gateway(
        GatewaySettings(
            listen="127.0.0.1:0",
            certificate=str(certs / "coordinator.crt"),
            key=str(certs / "coordinator.key"),
            ca=str(certs / "ca.crt"),
            sites=("cleveland",),
            limit=LIMIT,
            pins=pins,
        )
    )


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), 30))


async def connect(port: int, certs: Path, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = client_context(certs / f"{name}.crt", certs / f"{name}.key")
    return await asyncio.open_connection("127.0.0.1", port, ssl=context)


async def hello(port: int, certs: Path, name: str, site: str) -> tuple[Any, asyncio.StreamReader, Any]:
    reader, writer = await connect(port, certs, name)
    await write_message(writer, {"type": "hello", "site": site, "version": 1}, LIMIT)
    return await read_message(reader, LIMIT, "gateway"), reader, writer


def terms() -> RunTerms:
    return RunTerms("run-1", "heart-disease", "0" * 64, "tabular", "logistic", "packed", True, "off",
                    None, None, 3, 5, 4)  # fmt: skip


def test_a_site_with_the_federations_certificate_gets_its_runs_open_and_answers_calls(certs: Path) -> None:
    async def scenario() -> tuple[Any, Any, Any]:
        # Prepare: a gateway with the run's open registered before the site connects
        gw = gateway(certs)
        port = await gw.start()
        await gw.register("cleveland", "session-1", dumps(("terms", "spec")))
        welcome, reader, writer = await hello(port, certs, "cleveland", "cleveland")

        async def site() -> None:  # answers the open, then one call
            for _ in range(2):
                call = await read_message(reader, LIMIT, "gateway")
                body = dumps(("echo", call["method"], loads(call["body"])))
                await write_message(writer, {"type": "result", "id": call["id"], "body": body}, LIMIT)

        serving = asyncio.create_task(site())
        # Execute
        opened = await gw.opened("cleveland", 5)
        answer = await gw.call("cleveland", "session-1", "status", dumps(()))
        await serving
        await gw.stop()
        return welcome, opened, answer

    welcome, opened, answer = run(scenario)
    # Assert
    assert welcome["type"] == "welcome"
    assert opened[0] == "ok" and loads(opened[1]) == ("echo", "open", ("terms", "spec"))
    assert answer[0] == "ok" and loads(answer[1]) == ("echo", "status", ())


def test_a_client_certificate_from_another_ca_fails_the_handshake(certs: Path) -> None:
    async def scenario() -> None:
        gw = gateway(certs)
        port = await gw.start()
        try:
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                await hello(port, certs / "rogue", "cleveland", "cleveland")
            assert await gw.connected() == {}
        finally:
            await gw.stop()

    run(scenario)


def test_a_site_claiming_another_sites_name_or_not_in_the_federation_is_refused(certs: Path) -> None:
    async def scenario() -> tuple[Any, Any]:
        gw = gateway(certs)
        port = await gw.start()
        impostor, _, _ = await hello(port, certs, "hungary", "cleveland")  # hungary's certificate
        stranger, _, _ = await hello(port, certs, "hungary", "hungary")  # not a silo of this run
        await gw.stop()
        return impostor, stranger

    impostor, stranger = run(scenario)
    assert impostor["type"] == "refused" and "issued to 'hungary'" in impostor["message"]
    assert stranger["type"] == "refused" and "not a remote silo" in stranger["message"]


def test_a_pinned_site_must_present_exactly_its_certificate(certs: Path) -> None:
    async def scenario() -> tuple[Any, Any]:
        # Prepare: cleveland pinned to its own certificate, then to another one of the same CA
        answers = []
        for pin in (fingerprint(certs / "cleveland.crt"), fingerprint(certs / "hungary.crt")):
            gw = gateway(certs, pins=(("cleveland", pin),))
            port = await gw.start()
            answers.append((await hello(port, certs, "cleveland", "cleveland"))[0])
            await gw.stop()
        return answers[0], answers[1]

    pinned, other = run(scenario)
    assert pinned["type"] == "welcome"
    assert other["type"] == "refused" and "not the one pinned" in other["message"]


@pytest.mark.parametrize("frame", ["pickle", "oversized"])
def test_a_message_that_needs_pickle_or_is_too_big_drops_the_site_and_fails_its_calls(
    certs: Path, frame: str
) -> None:
    async def scenario() -> tuple[Any, dict[str, str]]:
        gw = gateway(certs)
        port = await gw.start()
        _, reader, writer = await hello(port, certs, "cleveland", "cleveland")
        pending = asyncio.create_task(gw.call("cleveland", "s", "status", dumps(())))
        call = await read_message(reader, LIMIT, "gateway")
        if frame == "pickle":  # an answer that would run code when unpickled
            data = pickle.dumps({"type": "result", "id": call["id"], "body": b""})
            writer.write(HEADER.pack(len(data)) + data)
        else:
            writer.write(HEADER.pack(LIMIT + 1))
        answer = await pending
        connected = await gw.connected()
        await gw.stop()
        return answer, connected

    answer, connected = run(scenario)
    assert answer[0] == "unavailable" and "cleveland" in answer[1] and "refused" in answer[1]
    assert connected == {}


def test_a_site_refuses_a_coordinator_whose_certificate_is_not_pinned(certs: Path, tmp_path: Path) -> None:
    async def scenario(site_toml: Path) -> bool:
        gw = gateway(certs)
        port = await gw.start()
        site = load_site(kit.site_file(tmp_path, "cleveland", port, certs, pinned=site_toml))
        try:
            return await SiteServer(site)._serve_once()
        finally:
            await gw.stop()

    # Prepare: the site pins a certificate the coordinator does not have
    pinned = certs / "rogue" / "coordinator.crt"
    welcomed = run(lambda: scenario(pinned))
    site = load_site(tmp_path / "cleveland" / "SITE.toml")
    entries = read_audit(site.audit_path)
    assert not welcomed
    assert [(e.method, e.outcome, e.rule) for e in entries] == [("connect", "refused", "coordinators")]


def test_a_site_answers_a_dry_run_and_refuses_a_body_that_needs_pickle(certs: Path, tmp_path: Path) -> None:
    async def scenario() -> tuple[Any, Any]:
        gw = gateway(certs)
        port = await gw.start()
        site = load_site(kit.site_file(tmp_path, "cleveland", port, certs, policy="max_rounds = 3"))
        serving = asyncio.create_task(SiteServer(site).serve_forever())
        try:
            dry = await gw.ask("cleveland", dumps(terms()), 20)
            bad = await gw.ask("cleveland", pickle.dumps(terms()), 20)
        finally:
            serving.cancel()
            await gw.stop()
        return dry, bad

    (kind, body, _), bad = run(scenario)
    refusals = loads(body)
    assert kind == "ok"
    assert refusals == (Refusal("cleveland", "max_rounds", refusals[0].detail),)
    assert "5" in refusals[0].detail and "3" in refusals[0].detail
    assert bad[0] == "failed" and "cleveland" in bad[1] and "malformed" in bad[1]
    entries = read_audit(load_site(tmp_path / "cleveland" / "SITE.toml").audit_path)
    assert [(e.method, e.outcome, e.rule) for e in entries] == [("ask", "refused", "max_rounds")]


def test_a_port_still_held_is_waited_for_then_refused_clearly(certs: Path) -> None:
    async def scenario() -> tuple[int, str]:
        # Prepare: a gateway holding the port, as a crashed coordinator's may for a while
        first = gateway(certs)
        port = await first.start()
        settings = replace(first._settings, listen=f"127.0.0.1:{port}", bind_timeout_s=0.5)
        # Execute: one gives up, one waits until the first lets go
        with pytest.raises(GatewayError) as refused:
            await Gateway(settings).start()
        second = Gateway(replace(settings, bind_timeout_s=10))
        waiting = asyncio.create_task(second.start())
        await asyncio.sleep(1)
        await first.stop()
        bound = await waiting
        await second.stop()
        return bound, str(refused.value)

    bound, message = run(scenario)
    assert bound > 0
    assert f"cannot listen on 127.0.0.1:{bound}" in message and "in use" in message
