"""The gateway against an XMPP implementation that is not slixmpp: an aioxmpp client
(tests/peers/aioxmpp_peer.py, Debian python3-aioxmpp, run by the system Python) of a real
Prosody exchanges messages, chat states (XEP-0085 ↔ RFC 3994) and delivery receipts
(XEP-0184 ↔ RFC 5438 IMDN) with a SIP user through Chorus, and errors come back as errors
both ways (RFC 7572 §5.2).

The SIP user is the test SIP endpoint of test_xmpp_messages_live: the gateway's outbound
proxy, recording every MESSAGE and answering with the status the test sets, and sending
MESSAGEs to Chorus as a SIP UA would; and in the last test SIPp, both as the UAS behind the
gateway (answering 200, or 404 for ``nobody``) and as a UAC writing to the XMPP user.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from control.msrp.cpim import parse_cpim
from control.msrp.iscomposing import (
    ISCOMPOSING_CONTENT_TYPE,
    ComposingState,
    IsComposing,
    parse_iscomposing,
)
from tests.peers.prosody import ProsodyProcess
from tests.peers.sipp import SippUas, run_sipp_async
from tests.peers.wait import wait_until
from tests.test_xmpp_messages_live import SipEndpoint, gateway
from tests.test_xmpp_presence_live import chorus
from tests.test_xmpp_receipts_live import answer_imdn, notifications, request_body

pytestmark = [pytest.mark.peer("prosody", "aioxmpp")]
__all__ = ["gateway"]  # the fixture, shared with the message tests

PEER = Path(__file__).resolve().parent / "peers" / "aioxmpp_peer.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter Debian's python3-aioxmpp is for


class AioxmppClient:
    """The aioxmpp peer process: commands in, the events it printed collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.events.append(json.loads(line))

    def command(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())

    def send(self, to: str, id: str, **parts: Any) -> None:
        self.command(op="send", to=to, id=id, **parts)

    def messages(self, match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "message" and match(e)]

    async def wait(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        assert await wait_until(lambda: self.messages(match), timeout=30), self.events
        return self.messages(match)[0]


@asynccontextmanager
async def aioxmpp_client(prosody: Any, resource: str = "indie") -> AsyncIterator[AioxmppClient]:
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON,
        str(PEER),
        f"bob@{prosody.xmpp_domain}/{resource}",
        prosody.users["bob"],
        "127.0.0.1",
        str(prosody.c2s_port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
    )
    client = AioxmppClient(proc)
    try:
        up = await wait_until(lambda: any(e["event"] == "up" for e in client.events), timeout=60)
        assert up, f"aioxmpp client not up (exit {proc.returncode})"
        yield client
    finally:
        if proc.returncode is None:
            client.command(op="quit")
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def send_sip(prosody: Any, endpoint: SipEndpoint, port: int, body: bytes, ctype: str) -> None:
    """alice (SIP) writes to bob (XMPP) through Chorus."""
    to, from_ = f"sip:bob@{prosody.xmpp_domain}", f"sip:alice@{prosody.component_jid}"
    endpoint.send_message(port, to, from_, body, ctype)


async def test_messages_and_chat_states_both_ways(gateway: Any) -> None:
    prosody, _, port, endpoint = gateway
    alice = f"alice@{prosody.component_jid}"
    async with aioxmpp_client(prosody) as bob:
        bob.send(alice, "m1", body="hello from aioxmpp")
        bob.send(alice, "s1", state="composing")
        assert await wait_until(lambda: len(endpoint.requests) >= 2, timeout=30)
        text, typing = endpoint.requests[:2]
        assert text.body == b"hello from aioxmpp"
        assert text.headers.get("Content-Type", "").startswith("text/plain")
        assert str(text.from_.uri) == f"sip:bob@{prosody.xmpp_domain};gr=indie"
        assert typing.headers.get("Content-Type") == ISCOMPOSING_CONTENT_TYPE
        assert parse_iscomposing(typing.body).state is ComposingState.ACTIVE

        send_sip(prosody, endpoint, port, b"hi bob", "text/plain")
        got = await bob.wait(lambda m: m["body"] == "hi bob")
        assert got["type"] == "chat" and got["from"] == alice
        composing = IsComposing(ComposingState.ACTIVE, refresh=None).serialize()
        send_sip(prosody, endpoint, port, composing, ISCOMPOSING_CONTENT_TYPE)
        state = await bob.wait(lambda m: m["state"] == "composing")
        assert state["body"] is None and state["from"] == alice
        assert len(bob.messages(lambda m: m["body"] == "hi bob")) == 1  # once, not twice
        assert await wait_until(lambda: endpoint.responses.count(202) == 2)


async def test_receipts_both_ways(gateway: Any) -> None:
    prosody, _, port, endpoint = gateway
    alice = f"alice@{prosody.component_jid}"
    async with aioxmpp_client(prosody) as bob:
        # XMPP -> SIP: bob asks for a receipt; alice's IMDN "delivered" comes back as one
        bob.send(alice, "want-receipt", body="did you get it?", request=True)
        assert await wait_until(lambda: len(endpoint.requests) >= 1, timeout=30)
        sent = endpoint.requests[0]
        assert sent.headers.get("Content-Type") == "message/cpim"
        cpim = parse_cpim(sent.body)
        assert cpim.body == b"did you get it?"
        sender = str(sent.from_.uri)
        assert sender == f"sip:bob@{prosody.xmpp_domain};gr=indie"
        answer_imdn(prosody, endpoint, port, cpim, "delivered")
        receipt = await bob.wait(lambda m: m["received"] is not None)
        assert receipt["received"] == "want-receipt" and receipt["from"] == alice

        # SIP -> XMPP: alice asks for positive delivery; bob's receipt is the IMDN
        body = request_body(prosody, "bob", "alice-m1", "positive-delivery", "hi bob")
        send_sip(prosody, endpoint, port, body, "message/cpim")
        message = await bob.wait(lambda m: m["body"] == "hi bob")
        assert message["request"] is True
        bob.send(alice, "r1", received=message["id"])
        assert await wait_until(lambda: len(notifications(endpoint)) == 1, timeout=30)
        request, notification = notifications(endpoint)[0]
        assert notification.message_id == "alice-m1" and notification.status == "delivered"
        assert str(request.uri) == f"sip:alice@{prosody.component_jid}"


async def test_errors_come_back_as_errors_both_ways(gateway: Any) -> None:
    prosody, _, port, endpoint = gateway
    async with aioxmpp_client(prosody) as bob:
        # XMPP -> SIP: the SIP side's final failures are the mapped stanza errors
        for status, id in ((404, "to-404"), (480, "to-480"), (488, "to-488")):
            endpoint.status = status
            bob.send(f"carol@{prosody.component_jid}", id, body=f"for a {status}")
            await bob.wait(lambda m, id=id: m["type"] == "error" and m["id"] == id)
        errors = {m["id"]: m["error"] for m in bob.messages(lambda m: m["type"] == "error")}
        assert errors == {
            "to-404": "item-not-found",
            "to-480": "recipient-unavailable",
            "to-488": "not-acceptable",
        }
        endpoint.status = 200

        # SIP -> XMPP: bob's client answers alice's message with an error stanza; alice
        # asked for negative delivery notifications, so it is her failed IMDN
        body = request_body(prosody, "bob", "alice-m2", "negative-delivery", "hello?")
        send_sip(prosody, endpoint, port, body, "message/cpim")
        message = await bob.wait(lambda m: m["body"] == "hello?")
        bob.command(
            op="error", to=message["from"], id=message["id"], condition="service-unavailable"
        )
        assert await wait_until(lambda: len(notifications(endpoint)) == 1, timeout=30)
        request, notification = notifications(endpoint)[0]
        assert notification.message_id == "alice-m2" and notification.status == "failed"
        assert str(request.uri) == f"sip:alice@{prosody.component_jid}"

        # and a plain message that errors comes back to alice as a notice MESSAGE
        before = len(endpoint.requests)
        send_sip(prosody, endpoint, port, b"plain one", "text/plain")
        plain = await bob.wait(lambda m: m["body"] == "plain one")
        bob.command(op="error", to=plain["from"], id=plain["id"], condition="item-not-found")
        assert await wait_until(lambda: len(endpoint.requests) > before, timeout=30)
        notice = endpoint.requests[before]
        assert str(notice.uri) == f"sip:alice@{prosody.component_jid}"
        assert b"not delivered" in notice.body and b"item-not-found" in notice.body


@pytest.fixture
async def sipp_gateway(tmp_path: Path) -> AsyncIterator[tuple[ProsodyProcess, int, SippUas]]:
    """Prosody and Chorus whose outbound proxy is a SIPp UAS (tests/sipp/uas_message_gateway)."""
    prosody = ProsodyProcess(users={"bob": "bob-password"}).start()
    uas = SippUas("uas_message_gateway").start()
    try:
        async with chorus(prosody, tmp_path, uas.port, send_timeout=10) as (_, _, port):
            yield prosody, port, uas
    finally:
        uas.stop()
        prosody.cleanup()


@pytest.mark.peer("sipp")
async def test_sipp_and_aioxmpp_exchange_messages_and_errors(sipp_gateway: Any) -> None:
    prosody, port, uas = sipp_gateway
    async with aioxmpp_client(prosody) as bob:
        bob.send(f"carol@{prosody.component_jid}", "to-carol", body="hello carol from aioxmpp")
        bob.send(f"nobody@{prosody.component_jid}", "to-nobody", body="hi nobody from aioxmpp")
        error = await bob.wait(lambda m: m["type"] == "error")
        assert error["id"] == "to-nobody" and error["error"] == "item-not-found"
        assert error["from"] == f"nobody@{prosody.component_jid}"

        keys = {"xmpp_domain": prosody.xmpp_domain, "sip_domain": prosody.component_jid}
        sent = await run_sipp_async("uac_message_xmpp", f"127.0.0.1:{port}", keys=keys)
        assert sent.ok, sent.describe()
        got = await bob.wait(lambda m: (m["body"] or "").strip() == "hello bob from sipp")
        assert got["type"] == "chat" and got["from"] == f"carol@{prosody.component_jid}"
        assert not bob.messages(lambda m: m["type"] == "error" and m["id"] == "to-carol")
    result = uas.stop()
    assert result.stats is not None and result.stats.successful == 2, result.describe()
