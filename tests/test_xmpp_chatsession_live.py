"""One-to-one chat sessions (RFC 7573) through a real Prosody and the Chorus component.

The XMPP user is bob, a slixmpp client of Prosody; the SIP user is alice@sip.localhost, a SIP
UA with MSRP chat on Chorus' own offering and answering stacks (tests/peers/sipclient's
SipClient, control/msrp/chat's ChatStream — what the room-chat tests' ChatClient is built
on), and Chorus's outbound proxy: every request the gateway sends toward sip.localhost
reaches her. Both directions, the idle end, the BYE end, the XMPP ``gone`` and unavailable
ends, and a refused INVITE answered to the XMPP sender.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from slixmpp import ClientXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from control.cli import build_server
from control.config import parse_config
from control.msrp.chat import ChatStream
from control.msrp.cpim import CpimAddress, CpimMessage, parse_cpim
from control.msrp.events import MessageReceived, ResponseReceived
from control.msrp.imdn import IMDN_CONTENT_TYPE, IMDN_CPIM_NS, parse_imdn
from control.msrp.iscomposing import (
    ISCOMPOSING_CONTENT_TYPE,
    ComposingState,
    IsComposing,
    parse_iscomposing,
)
from control.msrp.sdp import MsrpMedia, Setup, accept_msrp, msrp_media, parse_msrp_media
from control.msrp.transport import MsrpChannel, MsrpTransport
from control.msrp.uri import MsrpUri
from control.server import Server
from control.sip import sdp
from control.sip.message import Request
from control.sip.session import IncomingCall, Session, place_call
from control.sip.transport import Peer
from control.sip.uri import NameAddr, SipUri, parse_uri
from control.sip.useragent import IncomingRequest
from control.xmpp.app import XmppGateway
from tests.peers.ports import free_ports
from tests.peers.prosody import ProsodyProcess, chorus_config, client_ssl_context
from tests.peers.sipclient import SipClient
from tests.peers.wait import wait_until
from tests.test_streams_media import answer_of

pytestmark = [pytest.mark.peer("prosody"), pytest.mark.timeout(300)]

CHATSTATES = "http://jabber.org/protocol/chatstates"
RECEIPTS = "urn:xmpp:receipts"
ALICE = "alice@sip.localhost"


class Alice(SipClient):
    """sip:alice@sip.localhost with MSRP chat: calls out with a chat offer, answers the
    gateway's INVITEs (``answer_status`` 200 with an ``active`` chat answer, or a refusal),
    and keeps what reaches her: MSRP messages, pager MESSAGEs, BYEs."""

    def __init__(self, user: str = "alice") -> None:
        super().__init__("udp")
        self.user = user
        self.msrp = MsrpTransport()
        self.answer_status = 200
        self.invites: list[sdp.SessionDescription] = []
        self.pager: list[Request] = []  # MESSAGEs: none may come while a session is up
        self.received: asyncio.Queue[MessageReceived] = asyncio.Queue()
        self.statuses: dict[str, int] = {}  # Message-ID of what she sent -> its MSRP status
        self.session: Session | None = None
        self.offered: tuple[sdp.SdpSession, ChatStream] | None = None  # our chat() offer
        self.answered_with: tuple[MsrpUri, MsrpMedia] | None = None  # our answer's path
        self.channel: MsrpChannel | None = None
        self._readers: set[asyncio.Task[None]] = set()
        self.ua.request_handler = self._request

    def identity(self) -> NameAddr:
        return NameAddr(SipUri(host="sip.localhost", user=self.user), self.user.title())

    @property
    def port(self) -> int:
        assert self.layer is not None
        address = self.layer.local_address("udp")
        assert address is not None
        return address.port

    async def _request(self, incoming: IncomingRequest) -> None:
        if incoming.request.method == "MESSAGE":
            self.pager.append(incoming.request)
            incoming.respond(200, to_tag=self.ua.token(8))
        elif incoming.request.method == "INVITE":
            await self._invited(IncomingCall(self.ua, incoming))
        else:
            incoming.respond(200, to_tag=self.ua.token(8))

    async def _invited(self, call: IncomingCall) -> None:
        offer = sdp.parse(call.body)
        self.invites.append(offer)
        if self.answer_status != 200:
            call.reject(self.answer_status)
            return
        media = offer.media[0]
        theirs = parse_msrp_media(media, offer.direction_of(media))
        local = self.msrp.local_uri(theirs.secure)
        accept = accept_msrp(
            local, ("message/cpim", "text/plain"), accept_wrapped_types=("*",), setup=Setup.ACTIVE
        )
        self.session = call.accept(sdp.serialize(answer_of(offer, [accept])))
        self.answered_with = (local, theirs)
        self.channel = self.msrp.open(local, theirs.path, active=True)
        await self.channel.wait_connected(20)
        self._read(self.channel)

    async def call(self, uri: str, offer: bytes, port: int) -> Any:
        raise NotImplementedError("use chat()")

    async def chat(self, target: str, chorus_port: int) -> None:
        """INVITE ``target`` with one MSRP chat m-line; returns once MSRP is connected."""
        stream = ChatStream(self.msrp, secure=False, accept_wrapped_types=("*",))
        self.offered = (sdp.SdpSession(sess_id=11, address="127.0.0.1"), stream)
        offer = self.offered[0].offer([stream.offer_media()])
        session, response = await place_call(
            self.ua,
            parse_uri(target),
            from_=self.identity(),
            offer=sdp.serialize(offer),
            peer=Peer("udp", "127.0.0.1", chorus_port),
        )
        assert session is not None, f"INVITE answered {response.status} {response.reason}"
        self.session = session
        self.channel = stream.answered(sdp.parse(response.body).media[0])
        await stream.wait_connected(20)
        self._read(self.channel)

    async def refresh(self) -> int:
        """A re-INVITE with the same chat m-line (a session refresh, RFC 4028): its status."""
        assert self.session is not None and self.offered is not None
        state, stream = self.offered
        response = await self.session.reinvite(sdp.serialize(state.offer([stream.offer_media()])))
        if response.status == 200:
            state.answer_received(sdp.parse(response.body))
        return response.status

    async def reoffer_answered(self) -> int:
        """A re-INVITE in a session the gateway called her in: her path and role unchanged
        (a session refresh); its status."""
        assert self.session is not None and self.answered_with is not None
        local, _ = self.answered_with
        media = msrp_media(
            local, ("message/cpim", "text/plain"), accept_wrapped_types=("*",), setup=Setup.ACTIVE
        )
        offer = sdp.SdpSession(sess_id=7, address="127.0.0.1").offer([media])
        response = await self.session.reinvite(sdp.serialize(offer))
        return response.status

    def _read(self, channel: MsrpChannel) -> None:
        async def reader() -> None:
            while True:
                event = await channel.next_event()
                if isinstance(event, MessageReceived) and event.body:
                    self.received.put_nowait(event)
                elif isinstance(event, ResponseReceived) and event.message_id:
                    self.statuses[event.message_id] = event.status

        task = asyncio.create_task(reader())
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    def say(self, text: str, content_type: str = "text/plain") -> str:
        assert self.channel is not None
        return self.channel.send_message(content_type, text.encode())

    async def ended(self) -> str:
        """Why the session ended (the gateway's BYE, or ours)."""
        assert self.session is not None
        return await asyncio.wait_for(self.session.terminated, 60)

    async def close(self) -> None:
        for task in list(self._readers):
            task.cancel()
        if self.session is not None:
            await self.session.bye()
        with contextlib.suppress(Exception):
            await self.msrp.stop()
        await self.__aexit__(None, None, None)


class Bob:
    """bob@xmpp.localhost/desk: every message stanza he gets (bodies and chat states)."""

    def __init__(self, prosody: ProsodyProcess) -> None:
        self.xmpp = ClientXMPP(f"bob@{prosody.xmpp_domain}/desk", "bob-password")
        self.xmpp.ssl_context = client_ssl_context()
        self.inbox: list[Any] = []  # what came and no next() took yet, in order
        self._arrived = asyncio.Event()
        path = f"{{{self.xmpp.default_ns}}}message"
        self.xmpp.register_handler(Callback("all", MatchXPath(path), self._arrive))
        self.prosody = prosody

    async def start(self) -> Bob:
        up = asyncio.Event()
        self.xmpp.add_event_handler(
            "session_start", lambda _: (self.xmpp.send_presence(), up.set())
        )
        self.xmpp.connect("127.0.0.1", self.prosody.c2s_port)
        await asyncio.wait_for(up.wait(), 30)
        return self

    def say(
        self,
        text: str | None,
        *,
        state: str | None = None,
        id: str = "",
        receipt: bool = False,
        to: str = ALICE,
    ) -> None:
        message = self.xmpp.make_message(mto=to, mbody=text, mtype="chat")
        if id:
            message["id"] = id
        if receipt:  # XEP-0184
            message.xml.append(message.xml.makeelement(f"{{{RECEIPTS}}}request", {}))
        if state is not None:
            message.xml.append(message.xml.makeelement(f"{{{CHATSTATES}}}{state}", {}))
        message.send()

    def _arrive(self, stanza: Any) -> None:
        self.inbox.append(stanza)
        self._arrived.set()

    async def next(self, predicate: Any) -> Any:
        """The first stanza not taken yet that ``predicate`` likes (waiting for it)."""
        async with asyncio.timeout(60):
            while True:
                for stanza in self.inbox:
                    if predicate(stanza):
                        self.inbox.remove(stanza)
                        return stanza
                self._arrived.clear()
                await self._arrived.wait()

    async def text(self) -> Any:
        return await self.next(lambda s: bool(s["body"]))

    async def receipt(self) -> str:
        """The id the next receipt is for."""
        stanza = await self.next(lambda s: s.xml.find(f"{{{RECEIPTS}}}received") is not None)
        return str(stanza.xml.find(f"{{{RECEIPTS}}}received").get("id"))

    async def gone(self) -> Any:
        return await self.next(lambda s: s.xml.find(f"{{{CHATSTATES}}}gone") is not None)


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, **xmpp: Any) -> AsyncIterator[tuple[Server, Alice, Bob, int]]:
    """Prosody, Chorus with the gateway (alice as its outbound proxy), alice and bob."""
    prosody = ProsodyProcess(users={"bob": "bob-password"}).start()
    alice = Alice()
    await alice.__aenter__()
    (port,) = free_ports(1)
    table = chorus_config(prosody, tmp_path, port, proxy_port=alice.port, send_timeout=20, **xmpp)
    config = parse_config(table)
    server = build_server(config)
    await server.start()
    app = server.applications["xmpp"]
    assert isinstance(app, XmppGateway)
    app.start()
    bob = None
    try:
        assert await wait_until(lambda: app.component.connected, timeout=30)
        bob = await Bob(prosody).start()
        yield server, alice, bob, port
    finally:
        if bob is not None:
            bob.xmpp.disconnect()
        await alice.close()
        await server.stop()
        prosody.cleanup()


def sessions(server: Server) -> int:
    app = server.applications["xmpp"]
    assert isinstance(app, XmppGateway) and app.chats is not None
    return len(app.chats.table)


async def test_a_sip_invite_is_a_session_both_ways_until_the_sip_bye(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (server, alice, bob, port):
        await alice.chat("sip:bob@xmpp.localhost", port)
        alice.say("hello bob")
        message = await bob.text()
        assert message["body"] == "hello bob" and message["type"] == "chat"
        assert str(message["from"]) == ALICE
        bob.say("hi alice")
        reply = await asyncio.wait_for(alice.received.get(), 60)
        assert reply.body is not None and b"hi alice" in reply.body
        assert alice.pager == []  # over the session's MSRP, not as a MESSAGE
        assert sessions(server) == 1
        odd = alice.say("%PDF-1.7", "application/pdf")  # nothing XMPP carries: 415, not lost
        assert await wait_until(lambda: odd in alice.statuses, timeout=30)
        assert alice.statuses[odd] == 415
        assert alice.session is not None
        await alice.session.bye()
        gone = await bob.gone()  # RFC 7573: the SIP user left the chat
        assert str(gone["from"]) == ALICE
        assert await wait_until(lambda: sessions(server) == 0, timeout=30)


async def test_a_sip_session_carries_chat_states_imdn_and_refreshes(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (_, alice, bob, port):
        await alice.chat("sip:bob@xmpp.localhost", port)
        # chat states both ways: RFC 3994 is-composing over MSRP <-> XEP-0085
        composing = IsComposing(ComposingState.ACTIVE, refresh=None).serialize()
        assert alice.channel is not None
        alice.channel.send_message(ISCOMPOSING_CONTENT_TYPE, composing)
        state = await bob.next(lambda s: s.xml.find(f"{{{CHATSTATES}}}composing") is not None)
        assert not state["body"] and str(state["from"]) == ALICE
        bob.say(None, state="composing")
        wrapped = await asyncio.wait_for(alice.received.get(), 60)
        assert wrapped.content_type == "message/cpim" and wrapped.body is not None
        indication = parse_cpim(wrapped.body)
        assert indication.content_type == ISCOMPOSING_CONTENT_TYPE
        assert parse_iscomposing(indication.body).state is ComposingState.ACTIVE
        # RFC 5438 over MSRP: alice asks for a delivery notification, bob's receipt is it
        asked = CpimMessage.build(
            content_type="text/plain",
            body=b"tell me you got this",
            sender=CpimAddress("sip:alice@sip.localhost"),
            recipients=(CpimAddress("sip:bob@xmpp.localhost"),),
            datetime=datetime.now(UTC),
            namespaces={"imdn": IMDN_CPIM_NS},
            extra=[
                ("imdn.Message-ID", "alice-1"),
                ("imdn.Disposition-Notification", "positive-delivery"),
            ],
        )
        alice.channel.send_message("message/cpim", asked.serialize())
        wants = await bob.next(lambda s: s["body"] == "tell me you got this")
        assert wants.xml.find(f"{{{RECEIPTS}}}request") is not None
        received = f'<received xmlns="{RECEIPTS}" id="{wants["id"]}"/>'
        bob.xmpp.send_raw(f'<message to="{ALICE}" id="r1">{received}</message>')
        notice = await asyncio.wait_for(alice.received.get(), 60)
        assert notice.body is not None
        notification = parse_cpim(notice.body)
        assert notification.content_type == IMDN_CONTENT_TYPE
        delivered = parse_imdn(notification.body)
        assert (delivered.message_id, delivered.status) == ("alice-1", "delivered")
        assert await alice.refresh() == 200  # a session refresh: the same MSRP goes on
        alice.say("still here")
        assert (await bob.text())["body"] == "still here"


async def test_an_xmpp_chat_becomes_an_invite_with_msrp_until_gone(tmp_path: Path) -> None:
    async with gateway(tmp_path, chat_sessions=True) as (server, alice, bob, _):
        bob.say("hello alice", id="first", receipt=True)
        bob.say("are you there?", id="second")  # while the INVITE rings: queued, then sent
        first = await asyncio.wait_for(alice.received.get(), 60)
        second = await asyncio.wait_for(alice.received.get(), 60)
        assert (first.body, second.body) == (b"hello alice", b"are you there?")
        assert len(alice.invites) == 1
        line = alice.invites[0].media[0]
        assert line.media == "message" and line.proto == "TCP/MSRP"
        assert alice.pager == []
        alice.say("hi bob")
        message = await bob.text()
        assert message["body"] == "hi bob" and str(message["from"]) == ALICE
        long_text = "y" * 5000  # three MSRP chunks: one receipt, after the last one's 200
        bob.say(long_text, id="long", receipt=True)
        assert (await asyncio.wait_for(alice.received.get(), 60)).body == long_text.encode()
        # XEP-0184 receipts from the SIP user's MSRP 200s: the queued one, then the long one
        assert [await bob.receipt(), await bob.receipt()] == ["first", "long"]
        assert await alice.reoffer_answered() == 200  # her refresh: the same MSRP goes on
        alice.say("refreshed")
        assert (await bob.text())["body"] == "refreshed"
        bob.say(None, state="gone")  # XEP-0085: bob left the chat
        assert await alice.ended() != ""
        assert await wait_until(lambda: sessions(server) == 0, timeout=30)
        assert len(alice.invites) == 1


async def test_an_idle_session_ends_both_ways(tmp_path: Path) -> None:
    async with gateway(tmp_path, chat_sessions=True, chat_session_idle=2) as (
        server,
        alice,
        bob,
        _,
    ):
        bob.say("anyone?")
        assert (await asyncio.wait_for(alice.received.get(), 60)).body == b"anyone?"
        await alice.ended()  # the gateway's BYE once nobody wrote for 2 s
        gone = await bob.gone()
        assert str(gone["from"]) == ALICE
        assert sessions(server) == 0


async def test_unavailable_presence_ends_the_session(tmp_path: Path) -> None:
    async with gateway(tmp_path, chat_sessions=True) as (server, alice, bob, _):
        bob.say("brb")
        assert (await asyncio.wait_for(alice.received.get(), 60)).body == b"brb"
        bob.xmpp.send_presence(pto=ALICE, ptype="unavailable")
        await alice.ended()
        assert await wait_until(lambda: sessions(server) == 0, timeout=30)


async def test_a_refused_invite_answers_the_waiting_message(tmp_path: Path) -> None:
    async with gateway(tmp_path, chat_sessions=True) as (server, alice, bob, _):
        alice.answer_status = 486
        bob.say("busy?", id="knock")
        error = await bob.next(lambda s: s["type"] == "error")
        assert error["id"] == "knock"
        assert error["error"]["condition"] == "recipient-unavailable"  # SIP 486
        assert len(alice.invites) == 1 and alice.received.empty()
        assert sessions(server) == 0


async def test_max_chat_sessions_is_a_limit_both_ways(tmp_path: Path) -> None:
    async with gateway(tmp_path, chat_sessions=True, max_chat_sessions=1) as (
        server,
        alice,
        bob,
        port,
    ):
        bob.say("one session", id="one")
        assert (await asyncio.wait_for(alice.received.get(), 60)).body == b"one session"
        carol = Alice("carol")  # a second SIP user calling bob: over the limit, 486
        await carol.__aenter__()
        try:
            with pytest.raises(AssertionError, match="INVITE answered 486"):
                await carol.chat("sip:bob@xmpp.localhost", port)
        finally:
            await carol.close()
        bob.say("and another", id="two", to="dave@sip.localhost")  # over the limit too
        error = await bob.next(lambda s: s["type"] == "error")
        assert error["id"] == "two"
        assert error["error"]["condition"] == "resource-constraint"
        assert sessions(server) == 1


async def test_an_xmpp_error_for_a_session_message_reaches_the_sip_user(tmp_path: Path) -> None:
    """carol has no account: Prosody bounces the chat message; alice hears of it in the chat
    (she asked for no IMDN), as pager mode would tell her by MESSAGE."""
    async with gateway(tmp_path) as (_, alice, _, port):
        await alice.chat("sip:carol@xmpp.localhost", port)
        alice.say("anyone?")
        notice = await asyncio.wait_for(alice.received.get(), 60)
        assert notice.body is not None
        text = notice.body.decode()
        assert "not delivered" in text and "carol@xmpp.localhost" in text, text


async def test_losing_the_xmpp_server_ends_the_sessions(tmp_path: Path) -> None:
    """kill -9 of Prosody: no XMPP user can be reached or write; the session's SIP side is
    BYEd rather than left open until idle."""
    async with gateway(tmp_path) as (server, alice, bob, port):
        await alice.chat("sip:bob@xmpp.localhost", port)
        alice.say("hello")
        assert (await bob.text())["body"] == "hello"
        bob.prosody.kill()
        await alice.ended()
        assert sessions(server) == 0
