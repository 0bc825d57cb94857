"""Presence through the gateway (RFC 8048) with a real Prosody and SIPp.

SIP watcher → XMPP user: SIPp subscribes to ``sip:juliet@xmpp.localhost``; juliet (a slixmpp
client of Prosody) approves, goes available "in a meeting", then offline; SIPp's NOTIFYs
carry open + that note, then closed; SIPp unsubscribes. A refusal (juliet answers
unsubscribed) ends SIPp's subscription. XMPP user → SIP user: juliet subscribes to
``romeo@sip.localhost``; SIPp is romeo's presence notifier (Chorus's outbound proxy): its
NOTIFYs become presence from romeo's resources, its refresh is answered, juliet's
unsubscribe is a SUBSCRIBE Expires: 0. A SIP side answering 503 is retried with doubling
delays.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from slixmpp import ClientXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from control.cli import build_server
from control.config import parse_config
from control.server import Server
from control.xmpp.app import XmppGateway
from control.xmpp.presence import ResourcePresence, parse_pidf
from tests.peers.ports import free_ports
from tests.peers.prosody import ProsodyProcess, chorus_config, client_ssl_context
from tests.peers.sipp import SippUas, run_sipp_async
from tests.peers.wait import wait_until
from tests.test_conference_info_live import notify_bodies
from tests.test_xmpp_messages_live import SipEndpoint

pytestmark = [pytest.mark.timeout(240), pytest.mark.peer("prosody"), pytest.mark.peer("sipp")]


@asynccontextmanager
async def chorus(
    prosody: ProsodyProcess, spool: Path, proxy_port: int | None, **xmpp: Any
) -> AsyncIterator[tuple[Server, XmppGateway, int]]:
    """Chorus with the gateway connected to ``prosody``, SIP out through ``proxy_port`` (or,
    None, straight to each request's URI: the NOTIFYs of a watcher to its Contact)."""
    (port,) = free_ports(1)
    config = parse_config(chorus_config(prosody, spool, port, proxy_port=proxy_port, **xmpp))
    server = build_server(config)
    await server.start()
    app = server.applications["xmpp"]
    assert isinstance(app, XmppGateway)
    app.start()
    try:
        assert await wait_until(lambda: app.component.connected, timeout=30)
        yield server, app, port
    finally:
        await server.stop()


@pytest.fixture
def prosody() -> Any:
    process = ProsodyProcess(users={"juliet": "juliet-password"}).start()
    try:
        yield process
    finally:
        process.cleanup()


async def juliet(prosody: ProsodyProcess, *, authorize: bool) -> tuple[ClientXMPP, Any]:
    """juliet online with resource "balcony"; every presence stanza she gets is queued."""
    xmpp = ClientXMPP(f"juliet@{prosody.xmpp_domain}/balcony", "juliet-password")
    xmpp.ssl_context = client_ssl_context()
    xmpp.auto_authorize = authorize  # False: a subscription request is answered unsubscribed
    xmpp.auto_subscribe = False
    presences: asyncio.Queue[Any] = asyncio.Queue()
    path = "{jabber:client}presence"
    xmpp.register_handler(Callback("test presence", MatchXPath(path), presences.put_nowait))
    up = asyncio.Event()
    xmpp.add_event_handler("session_start", lambda _: up.set())
    xmpp.connect("127.0.0.1", prosody.c2s_port)
    await asyncio.wait_for(up.wait(), 30)
    await xmpp.get_roster()  # an interested resource: Prosody pushes subscription changes
    xmpp.send_presence()
    return xmpp, presences


async def next_presence(presences: Any, kind: str, sender: str) -> Any:
    """The next presence of type ``kind`` from ``sender`` (a bare or full JID prefix)."""
    while True:
        stanza = await asyncio.wait_for(presences.get(), 60)
        if (stanza.xml.get("type") or "available") == kind and str(stanza["from"]).startswith(
            sender
        ):
            return stanza


def watch_of(app: XmppGateway, watcher: str, presentity: str) -> Any:
    return app.presence.watched.get((watcher, presentity))


def available(app: XmppGateway, watcher: str, presentity: str) -> dict[str, ResourcePresence]:
    """The resources of ``presentity`` the gateway's watch for ``watcher`` has seen online."""
    watched = watch_of(app, watcher, presentity)
    return watched.view.available if watched is not None else {}


async def test_a_sip_watcher_sees_the_xmpp_users_presence(prosody: Any, tmp_path: Path) -> None:
    user = f"juliet@{prosody.xmpp_domain}"
    watcher = f"romeo@{prosody.component_jid}"
    async with chorus(prosody, tmp_path, None) as (_, app, port):
        xmpp, _ = await juliet(prosody, authorize=True)
        sipp = asyncio.create_task(
            run_sipp_async(
                "uac_subscribe_presence",
                f"127.0.0.1:{port}",
                service="juliet",
                keys={"sip_domain": prosody.component_jid, "xmpp_domain": prosody.xmpp_domain},
                trace_messages=True,
                timeout=120,
            )
        )
        # juliet approves romeo's subscription (the gateway's XMPP subscribe) and Prosody
        # sends her presence to him: the watch sees her resource
        assert await wait_until(lambda: "balcony" in available(app, watcher, user), timeout=60)
        xmpp.send_presence(pstatus="in a meeting")
        assert await wait_until(
            lambda: available(app, watcher, user)["balcony"].status == "in a meeting", timeout=60
        )
        xmpp.disconnect()  # unavailable: the NOTIFY says closed, SIPp unsubscribes
        result = await sipp
        assert result.ok, result.describe()
    notifies = notify_bodies(result.messages)
    documents = [parse_pidf(body) for state, body in notifies if body]
    meeting = [d for d in documents if ResourcePresence(True, None, "in a meeting") in d.values()]
    assert meeting, result.messages[-4000:]
    assert len(meeting[0]) == 1  # one tuple: juliet's one resource
    assert not any(p.available for p in documents[-1].values())
    assert notifies[-1][0].startswith("terminated")
    entity = re.search(rb'entity="([^"]+)"', notifies[-1][1] or notifies[0][1])
    assert entity is not None and entity.group(1) == f"sip:{user}".encode()
    assert watch_of(app, watcher, user) is None  # the unsubscribe ended the watch


async def test_an_xmpp_refusal_terminates_the_sip_subscription(
    prosody: Any, tmp_path: Path
) -> None:
    async with chorus(prosody, tmp_path, None) as (_, _, port):
        xmpp, _ = await juliet(prosody, authorize=False)
        try:
            result = await run_sipp_async(
                "uac_subscribe_presence_rejected",
                f"127.0.0.1:{port}",
                service="juliet",
                keys={"sip_domain": prosody.component_jid, "xmpp_domain": prosody.xmpp_domain},
                trace_messages=True,
                timeout=120,
            )
        finally:
            xmpp.disconnect()
    assert result.ok, result.describe()
    assert notify_bodies(result.messages)[-1][0] == "terminated;reason=rejected"


async def test_an_xmpp_user_sees_the_sip_users_pidf(prosody: Any, tmp_path: Path) -> None:
    romeo = f"romeo@{prosody.component_jid}"
    uas = SippUas(
        "uas_presence_notifier",
        extra_args=["-key", "sip_domain", prosody.component_jid, "-m", "1", "-trace_msg"],
    ).start()
    try:
        async with chorus(prosody, tmp_path, uas.port) as (_, app, _):
            xmpp, presences = await juliet(prosody, authorize=True)
            try:
                xmpp.send_presence(pto=romeo, ptype="subscribe")
                await next_presence(presences, "subscribed", romeo)
                online = await next_presence(presences, "available", f"{romeo}/")
                assert online["status"] == "on the phone"
                assert str(online["from"]) == f"{romeo}/softphone"
                # the refresh (before Expires: 20 runs out) brings a closed NOTIFY
                offline = await next_presence(presences, "unavailable", f"{romeo}/")
                assert str(offline["from"]) == f"{romeo}/softphone"
                xmpp.send_presence(pto=romeo, ptype="unsubscribe")
                assert await wait_until(lambda: not app.presence.subscriptions, timeout=30)
            finally:
                xmpp.disconnect()
            result = await uas.astop()
    finally:
        uas.stop()
    assert result.ok, result.describe()
    assert result.stats is not None and result.stats.successful == 1, result.describe()


def retry_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The waits the presence gateway logged before each retry, in order."""
    return [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"next try in (\d+) s", r.getMessage()))
    ]


async def test_a_sip_side_that_fails_is_backed_off(
    prosody: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    _, endpoint = await loop.create_datagram_endpoint(SipEndpoint, local_addr=("127.0.0.1", 0))
    endpoint.status = 503
    proxy_port = endpoint.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    caplog.set_level(logging.INFO, logger="chorus.xmpp.presence")
    try:
        async with chorus(prosody, tmp_path, proxy_port) as (_, app, _):
            xmpp, _ = await juliet(prosody, authorize=True)
            try:
                xmpp.send_presence(pto=f"romeo@{prosody.component_jid}", ptype="subscribe")
                # The third 503 is logged after the endpoint has seen the third SUBSCRIBE.
                assert await wait_until(lambda: len(retry_delays(caplog)) >= 3, timeout=60)
            finally:
                xmpp.disconnect()
            delays = retry_delays(caplog)
            # 1 s, then 2 s, then 4 s: each failure doubles the wait (RetryPolicy)
            assert delays[:3] == [1.0, 2.0, 4.0], delays
            assert {r.method for r in endpoint.requests} == {"SUBSCRIBE"}
            assert len(app.presence.subscriptions) == 1  # still wanted, waiting for its retry
    finally:
        endpoint.transport.close()  # type: ignore[union-attr]
