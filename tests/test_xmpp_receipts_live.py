"""Delivery receipts (XEP-0184) ↔ IMDN (RFC 5438) through a real Prosody and the component.

The XMPP user is a slixmpp client of Prosody; the SIP users are the test's SIP endpoint (the
gateway's outbound proxy, from test_xmpp_messages_live), which records the MESSAGEs and
sends its own IMDNs.
"""

from __future__ import annotations

import asyncio
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from control.msrp.cpim import parse_cpim
from control.msrp.imdn import IMDN_CPIM_NS
from control.sip.uri import SipUri
from control.xmpp.receipts import (
    RECEIPTS_NS,
    delivery_notification,
    imdn_request_of,
    notification_of,
)
from tests.peers.wait import wait_until
from tests.test_xmpp_messages_live import SipEndpoint, client, gateway

pytestmark = pytest.mark.peer("prosody")
__all__ = ["gateway"]  # the fixture, shared with the message tests

CPIM_REQUEST = (
    "From: <sip:alice@{sip}>\r\n"
    "To: <sip:{to}@{xmpp}>\r\n"
    "DateTime: 2026-12-03T10:00:00+00:00\r\n"
    "NS: imdn <urn:ietf:params:imdn>\r\n"
    "imdn.Message-ID: {message_id}\r\n"
    "imdn.Disposition-Notification: {asked}\r\n"
    "\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "{text}"
)


def request_body(prosody: Any, to: str, message_id: str, asked: str, text: str) -> bytes:
    return CPIM_REQUEST.format(
        sip=prosody.component_jid,
        xmpp=prosody.xmpp_domain,
        to=to,
        message_id=message_id,
        asked=asked,
        text=text,
    ).encode()


def receipts_to(xmpp: Any) -> asyncio.Queue[Any]:
    """The receipts the client gets (slixmpp's ``message`` event is for messages with a body)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    path = f"{{jabber:client}}message/{{{RECEIPTS_NS}}}received"
    xmpp.register_handler(Callback("receipts", MatchXPath(path), queue.put_nowait))
    return queue


def notifications(endpoint: SipEndpoint) -> list[Any]:
    found = []
    for request in endpoint.requests:
        content_type = request.headers.get("Content-Type") or ""
        notification = notification_of(content_type, request.body)
        if notification is not None:
            found.append((request, notification))
    return found


async def request_receipt(xmpp: Any, prosody: Any, endpoint: SipEndpoint, id: str) -> Any:
    """bob asks alice for a receipt; the MESSAGE alice's UA gets, as CPIM."""
    stanza = xmpp.make_message(mto=f"alice@{prosody.component_jid}", mbody=id, mtype="chat")
    stanza["id"] = id
    stanza.xml.append(ET.Element(f"{{{RECEIPTS_NS}}}request"))
    stanza.send()
    assert await wait_until(lambda: len(endpoint.requests) >= 1, timeout=30)
    sent = endpoint.requests[0]
    assert sent.headers.get("Content-Type") == "message/cpim"
    return parse_cpim(sent.body)


def answer_imdn(prosody: Any, endpoint: SipEndpoint, port: int, cpim: Any, status: str) -> None:
    """alice's UA sends the IMDN ``status`` for ``cpim`` to its From (RFC 5438 §7.1.1)."""
    asked = imdn_request_of("message/cpim", cpim.serialize())
    assert asked is not None and asked.positive and asked.negative
    assert cpim.value("Message-ID", IMDN_CPIM_NS) == asked.message_id
    _, body = delivery_notification(
        asked.message_id,
        status=status,
        sender=SipUri(host=prosody.component_jid, user="alice"),
        recipient=SipUri(host=prosody.xmpp_domain, user="bob", params={"gr": "desk"}),
        notification_id=f"alice-{status}",
        now=cpim.datetime,
    )
    endpoint.send_message(
        port, cpim.sender.uri, f"sip:alice@{prosody.component_jid}", body, "message/cpim"
    )


async def test_an_xmpp_receipt_request_becomes_imdn_and_delivered_comes_back(gateway: Any) -> None:
    prosody, _, port, endpoint = gateway
    xmpp, _ = await client(prosody)
    inbox = receipts_to(xmpp)
    try:
        cpim = await request_receipt(xmpp, prosody, endpoint, "bob-1")
        assert cpim.body == b"bob-1"
        answer_imdn(prosody, endpoint, port, cpim, "delivered")
        receipt = await asyncio.wait_for(inbox.get(), 30)
        received = receipt.xml.find(f"{{{RECEIPTS_NS}}}received")
        assert received is not None and received.get("id") == "bob-1"
        assert str(receipt["from"]) == f"alice@{prosody.component_jid}"
        assert await wait_until(lambda: 200 in endpoint.responses)
    finally:
        xmpp.disconnect()


async def test_a_failed_imdn_comes_back_as_an_error_stanza(gateway: Any) -> None:
    prosody, _, port, endpoint = gateway
    xmpp, inbox = await client(prosody)
    try:
        cpim = await request_receipt(xmpp, prosody, endpoint, "bob-2")
        answer_imdn(prosody, endpoint, port, cpim, "failed")
        error = await asyncio.wait_for(inbox.get(), 30)
        assert error["type"] == "error"
        assert error["id"] == "bob-2"
        assert error["error"]["condition"] == "recipient-unavailable"
    finally:
        xmpp.disconnect()


async def test_a_sip_imdn_request_is_answered_by_the_xmpp_receipt(gateway: Any) -> None:
    prosody, _, port, endpoint = gateway
    xmpp, inbox = await client(prosody)
    try:
        body = request_body(prosody, "bob", "alice-m1", "positive-delivery", "hi bob")
        endpoint.send_message(
            port,
            f"sip:bob@{prosody.xmpp_domain}",
            f"sip:alice@{prosody.component_jid}",
            body,
            "message/cpim",
        )
        message = await asyncio.wait_for(inbox.get(), 30)
        assert message["body"] == "hi bob"
        assert message.xml.find(f"{{{RECEIPTS_NS}}}request") is not None
        reply = xmpp.make_message(mto=message["from"], mtype="chat")
        reply.xml.append(ET.Element(f"{{{RECEIPTS_NS}}}received", {"id": message["id"]}))
        reply.send()
        assert await wait_until(lambda: len(notifications(endpoint)) == 1, timeout=30)
        request, notification = notifications(endpoint)[0]
        assert str(request.uri) == f"sip:alice@{prosody.component_jid}"
        assert notification.message_id == "alice-m1"
        assert notification.status == "delivered"
        assert str(request.from_.uri) == f"sip:bob@{prosody.xmpp_domain}"
    finally:
        xmpp.disconnect()


async def test_negative_delivery_asked_and_xmpp_error_gives_failed_imdn(gateway: Any) -> None:
    prosody, _, port, endpoint = gateway
    body = request_body(prosody, "nobody", "alice-m2", "negative-delivery", "anyone?")
    endpoint.send_message(
        port,
        f"sip:nobody@{prosody.xmpp_domain}",
        f"sip:alice@{prosody.component_jid}",
        body,
        "message/cpim",
    )
    assert await wait_until(lambda: len(notifications(endpoint)) == 1, timeout=30)
    request, notification = notifications(endpoint)[0]
    assert notification.message_id == "alice-m2"
    assert notification.status == "failed"
    assert str(request.from_.uri) == f"sip:nobody@{prosody.xmpp_domain}"
