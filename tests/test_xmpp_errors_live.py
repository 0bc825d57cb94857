"""Stanzas the gateway cannot map get RFC 6120 §8.3 errors back, through a real Prosody, and
the component goes on: the next good message still reaches the SIP user.

The XMPP user is a slixmpp client of Prosody writing raw stanzas (Prosody stamps ``from`` and
routes them to the component); the SIP side is the SIP endpoint of test_xmpp_messages_live,
the gateway's outbound proxy, which records every MESSAGE.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from control.xmpp.app import XmppGateway
from control.xmpp.errors import StanzaLimits
from tests.peers.wait import wait_until
from tests.test_xmpp_messages_live import client, gateway

pytestmark = pytest.mark.peer("prosody")
__all__ = ["gateway"]  # the fixture, shared with the message tests

CHATSTATES = "http://jabber.org/protocol/chatstates"
XHTML_IM = "http://jabber.org/protocol/xhtml-im"
XHTML = "http://www.w3.org/1999/xhtml"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


async def errors_by_id(inbox: asyncio.Queue[Any], ids: set[str]) -> dict[str, Any]:
    """The error stanzas the client got for ``ids`` (anything else it got is left out)."""
    got: dict[str, Any] = {}
    while set(got) != ids:
        stanza = await asyncio.wait_for(inbox.get(), 30)
        if stanza["type"] == "error" and stanza["id"] in ids:
            got[stanza["id"]] = stanza
    return got


def condition_of(stanza: Any) -> str:
    """The stanza error's condition, read from the XML: slixmpp's own accessor knows only
    RFC 3920's conditions (no ``policy-violation``)."""
    error = stanza.xml.find("{jabber:client}error")
    assert error is not None
    names = [child.tag.split("}")[1] for child in error if child.tag.startswith(f"{{{STANZAS}}}")]
    return next(name for name in names if name != "text")


def gateway_of(server: Any) -> XmppGateway:
    app = server.applications["xmpp"]
    assert isinstance(app, XmppGateway)
    return app


def raw(xmpp: Any, to: str, id: str, inner: str) -> None:
    xmpp.send_raw(f'<message to="{to}" id="{id}" type="chat">{inner}</message>')


async def test_malformed_and_oversize_stanzas_get_errors_and_the_gateway_goes_on(
    gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    prosody, server, _, endpoint = gateway
    app = gateway_of(server)
    app.component.limits = StanzaLimits(max_stanza_bytes=8192)  # as [xmpp] max_stanza_bytes
    caplog.set_level(logging.INFO, logger="chorus.xmpp")
    xmpp, inbox = await client(prosody)
    alice = f"alice@{prosody.component_jid}"
    try:
        raw(xmpp, alice, "state", f'<body>hi</body><typing xmlns="{CHATSTATES}"/>')
        raw(xmpp, alice, "twostates", f'<active xmlns="{CHATSTATES}"/><gone xmlns="{CHATSTATES}"/>')
        xhtml = f'<html xmlns="{XHTML_IM}"><body xmlns="{XHTML}"><p>no plain body</p></body></html>'
        raw(xmpp, alice, "xhtml", xhtml)
        raw(xmpp, alice, "big", "<body>" + "x" * 20000 + "</body>")
        raw(xmpp, prosody.component_jid, "nouser", "<body>to the gateway itself</body>")
        errors = await errors_by_id(inbox, {"state", "twostates", "xhtml", "big", "nouser"})
        conditions = {id: condition_of(stanza) for id, stanza in errors.items()}
        assert conditions == {
            "state": "bad-request",
            "twostates": "bad-request",
            "xhtml": "bad-request",
            "big": "policy-violation",
            "nouser": "item-not-found",
        }
        assert errors["big"]["error"]["type"] == "modify"
        assert "8192" in errors["big"]["error"]["text"]
        assert str(errors["state"]["from"]) == alice
        assert str(errors["nouser"]["from"]) == prosody.component_jid
        assert endpoint.requests == []  # nothing refused went on to SIP
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 5, [r.getMessage() for r in refusals]  # one line each

        xmpp.send_message(mto=alice, mbody="still here", mtype="chat")
        assert await wait_until(lambda: len(endpoint.requests) == 1, timeout=30)
        assert endpoint.requests[0].body == b"still here"
    finally:
        xmpp.disconnect()


async def test_a_handler_that_raises_is_answered_internal_server_error(
    gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    prosody, server, _, endpoint = gateway
    app = gateway_of(server)
    handle = app.component.on_message

    async def failing_once(message: Any) -> None:
        if message.id == "boom":
            raise KeyError("a bug")
        await handle(message)

    app.component.on_message = failing_once
    caplog.set_level(logging.INFO, logger="chorus.xmpp")
    xmpp, inbox = await client(prosody)
    alice = f"alice@{prosody.component_jid}"
    try:
        raw(xmpp, alice, "boom", "<body>first</body>")
        error = (await errors_by_id(inbox, {"boom"}))["boom"]
        assert error["error"]["condition"] == "internal-server-error"
        failed = [r for r in caplog.records if "failed (KeyError" in r.getMessage()]
        assert len(failed) == 1
        raw(xmpp, alice, "body", "<body>" + "z" * 70000 + "</body>")  # over max_message_bytes
        body = (await errors_by_id(inbox, {"body"}))["body"]
        assert condition_of(body) == "policy-violation"  # the stanza fits max_stanza_bytes
        raw(xmpp, alice, "after", "<body>second</body>")
        assert await wait_until(lambda: len(endpoint.requests) == 1, timeout=30)
        assert endpoint.requests[0].body == b"second"
    finally:
        xmpp.disconnect()


async def test_disco_info_advertises_receipts_and_chat_states(gateway: Any) -> None:
    prosody, _, _, _ = gateway
    xmpp, _ = await client(prosody)
    xmpp.register_plugin("xep_0030")
    try:
        for jid in (f"alice@{prosody.component_jid}", prosody.component_jid):
            result = await xmpp.plugin["xep_0030"].get_info(jid=jid, timeout=30)
            info = result["disco_info"]
            assert "urn:xmpp:receipts" in info["features"]
            assert CHATSTATES in info["features"]
            assert XHTML_IM in info["features"]
            assert ("gateway", "simple") in {(c, t) for c, t, _, _ in info["identities"]}
    finally:
        xmpp.disconnect()


async def test_a_sip_side_that_is_down_is_service_unavailable(gateway: Any) -> None:
    """The SIP side answers 503 (its proxy has no way on): service-unavailable, type wait."""
    prosody, _, _, endpoint = gateway
    endpoint.status = 503
    xmpp, inbox = await client(prosody)
    try:
        raw(xmpp, f"alice@{prosody.component_jid}", "down", "<body>anyone?</body>")
        error = (await errors_by_id(inbox, {"down"}))["down"]
        assert condition_of(error) == "service-unavailable"
        assert error["error"]["type"] == "wait"
    finally:
        xmpp.disconnect()


async def test_prosody_killed_sip_gets_503_until_the_component_is_back(gateway: Any) -> None:
    """kill -9 of Prosody: the component notices, SIP MESSAGEs to XMPP users are answered 503
    meanwhile (not lost in a dead stream); Prosody restarted, the component reconnects with
    its back-off and the next message reaches the XMPP user."""
    prosody, server, port, endpoint = gateway
    app = gateway_of(server)
    to, sender = f"sip:bob@{prosody.xmpp_domain}", f"sip:alice@{prosody.component_jid}"
    prosody.kill()
    assert await wait_until(lambda: not app.component.connected, timeout=30)
    endpoint.send_message(port, to, sender, b"while you were out", "text/plain")
    assert await wait_until(lambda: 503 in endpoint.responses, timeout=30)
    prosody.start()
    assert await wait_until(lambda: app.component.connected, timeout=60)
    xmpp, inbox = await client(prosody)
    try:
        endpoint.send_message(port, to, sender, b"welcome back", "text/plain")
        message = await asyncio.wait_for(inbox.get(), 30)
        assert message["body"] == "welcome back"
        assert await wait_until(lambda: 202 in endpoint.responses, timeout=30)
    finally:
        xmpp.disconnect()
