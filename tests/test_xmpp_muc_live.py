"""MUC ↔ room chat (RFC 7702, XEP-0045) through a real Prosody and the Chorus MUC component.

SIP participants (tests/peers/chatclient.py: INVITE with an MSRP chat m-line, CPIM inside)
open the conference room ``lobby@127.0.0.1``; XMPP users (slixmpp clients of Prosody over
STARTTLS) join ``lobby@conference.xmpp.localhost/<nick>``, which Chorus serves as its second
XEP-0114 component (deploy/prosody). Every message is counted after a barrier (each side
says one more thing and waits for the other's): the room relays in order, so a duplicate
or an echo would have arrived by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import ClientXMPP
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from control.cli import build_server
from control.conference import ConferenceApp
from control.config import parse_config
from control.media.engine import RoomId
from control.msrp import parse_iscomposing
from control.msrp.iscomposing import ISCOMPOSING_CONTENT_TYPE as ISCOMPOSING
from control.msrp.iscomposing import ComposingState
from control.server import Server
from control.xmpp.app import XmppGateway
from tests.peers.chatclient import ChatClient, ChatSession, uri_key
from tests.peers.ports import free_port, free_ports
from tests.peers.prosody import ProsodyProcess, chorus_config, client_ssl_context
from tests.peers.sipp import SippUas
from tests.peers.wait import wait_until
from tests.peers.watcher import ConferenceWatcher
from tests.test_conference_refer_live import ReferWatcher

pytestmark = [pytest.mark.timeout(240), pytest.mark.peer("prosody"), pytest.mark.peer("sipp")]

MUC_NS = "http://jabber.org/protocol/muc"
MUC_USER_NS = "http://jabber.org/protocol/muc#user"
DELAY_NS = "urn:xmpp:delay"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
ROOM = "lobby"


@dataclass
class Ports:
    """Where the in-process Chorus listens, as ChatClient wants it."""

    sip_port: int
    tls_port: int


@dataclass
class Setup:
    prosody: ProsodyProcess
    server: Server
    ports: Ports

    @property
    def room_jid(self) -> str:
        return f"{ROOM}@{self.prosody.muc_domain}"


@contextlib.asynccontextmanager
async def chorus_with_muc(
    spool: Path, *, proxy_port: int | None = None, conference: dict[str, Any] | None = None
) -> AsyncIterator[Setup]:
    """Prosody with users bob and carol, and Chorus with the gateway and its MUC domain."""
    users = {"bob": "bob-password", "carol": "carol-password"}
    prosody = ProsodyProcess(users=users).start()
    (port,) = free_ports(1)
    table = chorus_config(
        prosody, spool, port, transports=("udp", "tcp"), proxy_port=proxy_port, muc=True
    )
    table["conference"] = {"history_messages": 5, "chat_rate": 1000, "chat_burst": 1000}
    table["conference"] |= conference or {}
    table["rtp"] = {"timeout": 300.0}  # the SIPp target's audio is not what is tested
    server = build_server(parse_config(table))
    await server.start()
    app = server.applications["xmpp"]
    assert isinstance(app, XmppGateway) and app.muc is not None
    app.start()
    try:
        assert await wait_until(lambda: app.component.connected, timeout=30)
        assert await wait_until(
            lambda: app.muc is not None and app.muc.component.connected, timeout=30
        )
        yield Setup(prosody, server, Ports(port, port))
    finally:
        await server.stop()
        prosody.cleanup()


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with chorus_with_muc(tmp_path) as running:
        yield running


class Occupant:
    """A slixmpp client of Prosody; every presence and message it gets, in order."""

    def __init__(self, setup: Setup, user: str, resource: str = "desk") -> None:
        self.setup = setup
        self.jid = f"{user}@{setup.prosody.xmpp_domain}/{resource}"
        self.xmpp = ClientXMPP(self.jid, setup.prosody.users[user])
        self.xmpp.ssl_context = client_ssl_context()
        self.stanzas: list[ET.Element] = []
        for name in ("presence", "message", "iq"):
            path = f"{{jabber:client}}{name}"
            self.xmpp.register_handler(
                Callback(f"test {name}", MatchXPath(path), lambda s: self.stanzas.append(s.xml))
            )

    async def connect(self) -> Occupant:
        up = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _: up.set())
        self.xmpp.connect("127.0.0.1", self.setup.prosody.c2s_port)
        await asyncio.wait_for(up.wait(), 30)
        self.xmpp.send_presence()
        return self

    def join(self, nick: str, history: dict[str, str] | None = None) -> None:
        presence = self.xmpp.make_presence(pto=f"{self.setup.room_jid}/{nick}")
        x = ET.SubElement(presence.xml, f"{{{MUC_NS}}}x")
        if history is not None:
            ET.SubElement(x, f"{{{MUC_NS}}}history", history)
        presence["id"] = f"join-{nick}"
        presence.send()

    def leave(self, nick: str) -> None:
        self.xmpp.send_presence(pto=f"{self.setup.room_jid}/{nick}", ptype="unavailable")

    def say(self, text: str, *, id: str) -> None:
        message = self.xmpp.make_message(mto=self.setup.room_jid, mbody=text, mtype="groupchat")
        message["id"] = id
        message.send()

    def whisper(self, nick: str, text: str) -> None:
        self.xmpp.send_message(mto=f"{self.setup.room_jid}/{nick}", mbody=text, mtype="chat")

    def matching(self, predicate: Callable[[ET.Element], bool]) -> list[ET.Element]:
        return [s for s in self.stanzas if predicate(s)]

    async def wait(
        self, predicate: Callable[[ET.Element], bool], timeout: float = 30
    ) -> ET.Element:
        assert await wait_until(lambda: bool(self.matching(predicate)), timeout=timeout), (
            f"{self.jid} never got it; got {[ET.tostring(s)[:300] for s in self.stanzas[-8:]]}"
        )
        return self.matching(predicate)[0]

    async def joined(self, nick: str) -> None:
        """Until its own presence (status 110) and the subject that ends the join came."""
        await self.wait(lambda s: is_self_presence(s, nick))
        await self.wait(lambda s: s.find("{jabber:client}subject") is not None)

    def groupchat(self, text: str) -> list[ET.Element]:
        return self.matching(
            lambda s: s.get("type") == "groupchat" and body(s) == text and not delayed(s)
        )


def body(stanza: ET.Element) -> str | None:
    element = stanza.find("{jabber:client}body")
    return None if element is None else element.text


def delayed(stanza: ET.Element) -> bool:
    return stanza.find(f"{{{DELAY_NS}}}delay") is not None


def codes(stanza: ET.Element) -> set[str]:
    return {s.get("code") or "" for s in stanza.iter(f"{{{MUC_USER_NS}}}status")}


def is_self_presence(stanza: ET.Element, nick: str) -> bool:
    return (
        stanza.tag == "{jabber:client}presence"
        and (stanza.get("from") or "").endswith(f"/{nick}")
        and stanza.get("type") is None
        and "110" in codes(stanza)
    )


def presence_from(stanza: ET.Element, jid: str, kind: str | None = None) -> bool:
    return (
        stanza.tag == "{jabber:client}presence"
        and stanza.get("from") == jid
        and stanza.get("type") == kind
    )


@contextlib.asynccontextmanager
async def occupant(setup: Setup, user: str, resource: str = "desk") -> AsyncIterator[Occupant]:
    person = await Occupant(setup, user, resource).connect()
    try:
        yield person
    finally:
        person.xmpp.disconnect()


@contextlib.asynccontextmanager
async def sip_person(user: str, display: str, transport: str = "udp") -> AsyncIterator[ChatClient]:
    async with ChatClient(user, display, sip_transport=transport) as client:
        yield client


async def barrier(sip: ChatSession, xmpp: Occupant, tag: str) -> None:
    """Each side says ``tag`` once more and waits for the other's: everything sent before
    has arrived (the room relays in order)."""
    await sip.say(f"{tag} sip")
    xmpp.say(f"{tag} xmpp", id=f"{tag}-x")
    await xmpp.wait(lambda s: body(s) == f"{tag} sip")
    await sip.wait_text(f"{tag} xmpp")


async def test_room_messages_cross_once_each_way_and_occupants_follow_the_room(
    setup: Setup,
) -> None:
    async with (
        sip_person("alice", "Alice") as alice,
        sip_person("dave", "Dave") as dave,
        occupant(setup, "bob") as bob,
    ):
        a = await alice.join(setup.ports, ROOM, secure=False)
        d = await dave.join(setup.ports, ROOM, secure=False)
        bob.join("Bob")
        await bob.joined("Bob")
        # The SIP participants are occupants, before the joiner's own presence (§7.2.3).
        alice_jid, dave_jid = f"{setup.room_jid}/Alice", f"{setup.room_jid}/Dave"
        order = [s.get("from") for s in bob.stanzas if s.tag == "{jabber:client}presence"]
        assert order.index(alice_jid) < order.index(f"{setup.room_jid}/Bob")
        assert dave_jid in order
        joined = await a.wait_for(lambda: a.notices("joined"))
        assert joined and any("Bob joined" in n.text for n in a.notices("joined"))

        bob.say("hello from xmpp", id="m1")
        await a.wait_text("hello from xmpp")
        await d.wait_text("hello from xmpp")
        await a.say("hello from sip")
        await bob.wait(lambda s: body(s) == "hello from sip")
        await barrier(a, bob, "b1")
        await d.wait_text("b1 xmpp")

        from_bob = [m for m in a.public() if m.text == "hello from xmpp"]
        assert len(from_bob) == 1
        assert from_bob[0].sender is not None
        assert from_bob[0].sender.display_name == "Bob"
        assert from_bob[0].sender_key == ("bob", setup.prosody.xmpp_domain)
        assert [m.text for m in d.public()].count("hello from xmpp") == 1
        assert [m.text for m in a.public()].count("hello from sip") == 0  # no echo over MSRP
        # XEP-0045 §7.4: the sender's reflection, once, with its id; nothing else.
        reflected = bob.groupchat("hello from xmpp")
        assert len(reflected) == 1 and reflected[0].get("id") == "m1"
        assert reflected[0].get("from") == f"{setup.room_jid}/Bob"
        from_alice = bob.groupchat("hello from sip")
        assert len(from_alice) == 1 and from_alice[0].get("from") == alice_jid

        # A SIP participant leaving is an unavailable presence of its occupant.
        await d.leave()
        gone = await bob.wait(lambda s: presence_from(s, dave_jid, "unavailable"))
        item = gone.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
        assert item is not None and item.get("role") == "none"

        # The occupant leaving: its own unavailable presence, a notice in the room.
        bob.leave("Bob")
        await bob.wait(lambda s: presence_from(s, f"{setup.room_jid}/Bob", "unavailable"))
        assert await a.wait_for(lambda: any("Bob left" in n.text for n in a.notices("left")))


async def test_nick_conflict_and_unknown_room_are_errors(setup: Setup) -> None:
    async with (
        sip_person("alice", "Alice") as alice,
        occupant(setup, "bob") as bob,
        occupant(setup, "carol") as carol,
    ):
        await alice.join(setup.ports, ROOM, secure=False)
        bob.join("Bob")
        await bob.joined("Bob")
        for taken in ("Bob", "alice"):  # an XMPP occupant's nick, a SIP participant's name
            carol.join(taken)
            error = await carol.wait(
                lambda s, t=taken: s.get("type") == "error" and s.get("id") == f"join-{t}"
            )
            assert error.find(f"{{jabber:client}}error/{{{STANZAS_NS}}}conflict") is not None
        assert not carol.matching(lambda s: "110" in codes(s))
        presence = carol.xmpp.make_presence(pto=f"nowhere@{setup.prosody.muc_domain}/Carol")
        ET.SubElement(presence.xml, f"{{{MUC_NS}}}x")
        presence["id"] = "join-nowhere"
        presence.send()
        error = await carol.wait(lambda s: s.get("id") == "join-nowhere")
        assert error.get("type") == "error"
        assert error.find(f"{{jabber:client}}error/{{{STANZAS_NS}}}item-not-found") is not None
        # Carol, refused twice, joins under a free nick and the room goes on.
        carol.join("Carol")
        await carol.joined("Carol")


async def test_private_messages_both_ways(setup: Setup) -> None:
    async with sip_person("alice", "Alice") as alice, occupant(setup, "bob") as bob:
        a = await alice.join(setup.ports, ROOM, secure=False)
        bob.join("Bob")
        await bob.joined("Bob")
        bob.whisper("Alice", "psst alice")
        got = await a.wait_text("psst alice")
        assert [uri_key(r.uri) for r in got.recipients] == [uri_key(alice.uri)]
        await a.whisper(f"sip:bob@{setup.prosody.xmpp_domain}", "psst bob")
        private = await bob.wait(lambda s: body(s) == "psst bob")
        assert private.get("type") == "chat"
        assert private.get("from") == f"{setup.room_jid}/Alice"
        await barrier(a, bob, "b2")
        assert [m.text for m in a.public()].count("psst alice") == 1
        assert len(bob.matching(lambda s: body(s) == "psst bob")) == 1
        assert not bob.groupchat("psst alice")  # a private message is not reflected


async def test_history_on_join_with_delay_then_subject(setup: Setup) -> None:
    async with sip_person("alice", "Alice") as alice, occupant(setup, "bob") as bob:
        a = await alice.join(setup.ports, ROOM, secure=False)
        for text in ("h1", "h2", "h3"):
            assert await a.status_of(await a.say(text)) == 200
        bob.join("Bob", history={"maxstanzas": "2"})
        await bob.joined("Bob")
        replayed = bob.matching(delayed)
        assert [body(s) for s in replayed] == ["h2", "h3"]
        assert all(s.get("from") == f"{setup.room_jid}/Alice" for s in replayed)
        stamp = replayed[0].find(f"{{{DELAY_NS}}}delay")
        assert stamp is not None and stamp.get("from") == setup.room_jid
        # §7.2.15/§7.2.16: history after the presences, the subject after the history.
        kinds = [
            "self" if is_self_presence(s, "Bob") else "history" if delayed(s) else "subject"
            for s in bob.stanzas
            if is_self_presence(s, "Bob")
            or delayed(s)
            or s.find("{jabber:client}subject") is not None
        ]
        assert kinds == ["self", "history", "history", "subject"]
        # A subject set over MUC reaches the SIP side as a notice and the next joiner.
        subject = bob.xmpp.make_message(mto=setup.room_jid, mtype="groupchat")
        subject["subject"] = "Plans"
        subject.send()
        assert await a.wait_for(lambda: any("Plans" in n.text for n in a.notices("subject")))
        async with occupant(setup, "carol") as carol:
            carol.join("Carol", history={"maxstanzas": "0"})
            await carol.joined("Carol")
            topic = carol.matching(lambda s: s.find("{jabber:client}subject") is not None)
            assert [t.findtext("{jabber:client}subject") for t in topic] == ["Plans"]
            assert not carol.matching(delayed)


async def test_the_conference_ending_removes_the_occupant(setup: Setup) -> None:
    async with sip_person("alice", "Alice") as alice, occupant(setup, "bob") as bob:
        a = await alice.join(setup.ports, ROOM, secure=False)
        bob.join("Bob")
        await bob.joined("Bob")
        await a.leave()
        gone = await bob.wait(lambda s: presence_from(s, f"{setup.room_jid}/Bob", "unavailable"))
        assert gone.find(f".//{{{MUC_USER_NS}}}destroy") is not None
        assert "110" in codes(gone)
        bob.say("anyone?", id="late")
        error = await bob.wait(lambda s: s.get("id") == "late" and s.get("type") == "error")
        assert error.find(f"{{jabber:client}}error/{{{STANZAS_NS}}}item-not-found") is not None


async def test_a_moderators_refer_bye_kicks_the_occupant(setup: Setup) -> None:
    """RFC 4579 §5.11 with the room's moderation rules: the creator (a moderator) may remove
    the XMPP occupant, another participant may not."""
    async with (
        sip_person("alice", "Alice") as alice,
        sip_person("dave", "Dave") as dave,
        occupant(setup, "bob") as bob,
    ):
        a = await alice.join(setup.ports, ROOM, secure=False)
        d = await dave.join(setup.ports, ROOM, secure=False)
        bob.join("Bob")
        await bob.joined("Bob")
        refer_to = ("Refer-To", f"<sip:bob@{setup.prosody.xmpp_domain};method=BYE>")
        quiet = ("Refer-Sub", "false")
        assert d.session is not None and a.session is not None
        refused = await d.session.request("REFER", extra_headers=[refer_to, quiet])
        assert refused.status == 403
        accepted = await a.session.request("REFER", extra_headers=[refer_to, quiet])
        assert accepted.status == 202
        kicked = await bob.wait(lambda s: presence_from(s, f"{setup.room_jid}/Bob", "unavailable"))
        assert {"110", "307"} <= codes(kicked)
        assert await d.wait_for(lambda: d.notices("kicked"))
        assert "Bob was removed" in d.notices("kicked")[0].text
        bob.say("still here?", id="after-kick")
        error = await bob.wait(lambda s: s.get("id") == "after-kick" and s.get("type") == "error")
        assert error.find(f"{{jabber:client}}error/{{{STANZAS_NS}}}not-acceptable") is not None


def invitations(person: Occupant) -> list[ET.Element]:
    return person.matching(
        lambda s: s.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}invite") is not None
    )


async def test_a_refer_to_an_xmpp_user_is_a_muc_invitation(setup: Setup) -> None:
    """REFER method=INVITE naming an XMPP user (RFC 4579 §5.5 ↔ XEP-0045 §7.8.2): the room
    invites it; the sipfrag's final status is 603 when it declines, 200 when it joins."""
    async with (
        sip_person("alice", "Alice") as alice,
        occupant(setup, "bob") as bob,
        occupant(setup, "carol") as carol,
    ):
        a = await alice.join(setup.ports, ROOM, secure=False)
        assert a.session is not None
        domain = setup.prosody.xmpp_domain
        for person, user in ((bob, "bob"), (carol, "carol")):
            watcher = ReferWatcher(alice.sip.ua)
            watcher.watch(a.session.dialog.id, a.session.dialog.local_seq + 1)
            refer_to = ("Refer-To", f"<sip:{user}@{domain};method=INVITE>")
            response = await a.session.request("REFER", extra_headers=[refer_to])
            assert response.status == 202
            invite = await person.wait(lambda s, p=person: s in invitations(p))
            assert invite.get("from") == setup.room_jid
            element = invite.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}invite")
            assert element is not None and element.get("from") == f"{setup.room_jid}/Alice"
            if user == "bob":  # declines
                decline = person.xmpp.make_message(mto=setup.room_jid)
                x = ET.SubElement(decline.xml, f"{{{MUC_USER_NS}}}x")
                ET.SubElement(x, f"{{{MUC_USER_NS}}}decline")
                decline.send()
                expected = 603
            else:
                person.join("Carol")
                await person.joined("Carol")
                expected = 200
            await asyncio.wait_for(watcher.final, 60)
            assert watcher.statuses[-1] == expected, watcher.statuses


async def test_a_muc_invitation_of_a_sip_user_makes_the_room_invite_it(tmp_path: Path) -> None:
    """XEP-0045 §7.8.2 ↔ RFC 4579 §5.5: bob (an occupant; refer_policy lets participants
    invite, refer_allow the SIP users' domain) invites dave@sip.localhost; the room INVITEs
    sip:dave@sip.localhost (SIPp, the outbound proxy, answering the delayed offer) and dave
    becomes an occupant. Alice is on SIP over TCP so nothing for her goes through the
    proxy."""
    with SippUas(
        "uas_refer_delayed", extra_args=["-rtp_echo", "-mp", str(free_port("udp"))]
    ) as target:
        async with (
            chorus_with_muc(
                tmp_path,
                proxy_port=target.port,
                conference={"refer_policy": "participants", "refer_allow": ["sip.localhost"]},
            ) as setup,
            sip_person("alice", "Alice", "tcp") as alice,
            occupant(setup, "bob") as bob,
        ):
            await alice.join(setup.ports, ROOM, secure=False)
            bob.join("Bob")
            await bob.joined("Bob")
            invite = bob.xmpp.make_message(mto=setup.room_jid)
            x = ET.SubElement(invite.xml, f"{{{MUC_USER_NS}}}x")
            dave = f"dave@{setup.prosody.component_jid}"
            ET.SubElement(x, f"{{{MUC_USER_NS}}}invite", {"to": dave})
            invite.send()
            dave_jid = f"{setup.room_jid}/dave"
            await bob.wait(lambda s: presence_from(s, dave_jid), timeout=60)
            assert not bob.matching(
                lambda s: s.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}decline") is not None
            )


async def test_nick_changes_both_ways_rejoin_and_disconnect(setup: Setup) -> None:
    """nick ↔ NICKNAME (XEP-0045 §7.6, RFC 7701 §6): an occupant's new nick is the room's
    nickname (a clash is a conflict), a SIP participant's NICKNAME is a 303 for the XMPP
    side; a join from an occupant's own address starts afresh without leave/join notices;
    a client that goes offline leaves the room."""
    async with sip_person("alice", "Alice") as alice, occupant(setup, "bob") as bob:
        a = await alice.join(setup.ports, ROOM, secure=False)
        bob.join("Bob")
        await bob.joined("Bob")
        room = setup.room_jid
        bob.xmpp.send_presence(pto=f"{room}/Robert")
        renamed = await bob.wait(lambda s: presence_from(s, f"{room}/Bob", "unavailable"))
        assert {"110", "303"} <= codes(renamed)
        item = renamed.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
        assert item is not None and item.get("nick") == "Robert"
        await bob.wait(lambda s: is_self_presence(s, "Robert"))
        assert await a.wait_for(
            lambda: any("is now known as Robert" in n.text for n in a.notices("nickname"))
        )
        presence = bob.xmpp.make_presence(pto=f"{room}/alice")
        presence["id"] = "to-alice"
        presence.send()
        error = await bob.wait(lambda s: s.get("id") == "to-alice")
        assert error.get("type") == "error"
        assert error.find(f"{{jabber:client}}error/{{{STANZAS_NS}}}conflict") is not None
        bob.say("signed Robert", id="r1")
        got = await a.wait_text("signed Robert")
        assert got.sender is not None and got.sender.display_name == "Robert"

        assert await a.nickname("Ally") == 200
        moved = await bob.wait(lambda s: presence_from(s, f"{room}/Alice", "unavailable"))
        assert "303" in codes(moved)
        await bob.wait(lambda s: presence_from(s, f"{room}/Ally"))

        notices = len(a.notices("joined")) + len(a.notices("left"))
        before = len(bob.stanzas)
        bob.join("Robert")
        await bob.wait(lambda s: s in bob.stanzas[before:] and is_self_presence(s, "Robert"))
        await bob.wait(
            lambda s: s in bob.stanzas[before:] and s.find("{jabber:client}subject") is not None
        )
        assert any(presence_from(s, f"{room}/Ally") for s in bob.stanzas[before:])
        await barrier(a, bob, "b3")
        assert len(a.notices("joined")) + len(a.notices("left")) == notices

        bob.xmpp.disconnect()  # Prosody sends the room its unavailable presence
        assert await a.wait_for(lambda: any("Robert left" in n.text for n in a.notices("left")))


async def test_prosody_killed_occupants_leave_and_join_again(setup: Setup) -> None:
    """kill -9 of Prosody: its sessions are gone, so the occupants leave the room (the SIP side
    hears it); the MUC component reconnects to the restarted Prosody, and a join goes through
    and chat with it."""
    async with sip_person("alice", "Alice") as alice, occupant(setup, "bob") as bob:
        a = await alice.join(setup.ports, ROOM, secure=False)
        bob.join("Bob")
        await bob.joined("Bob")
        setup.prosody.kill()
        assert await a.wait_for(lambda: any("Bob left" in n.text for n in a.notices("left")))
        setup.prosody.start()
        app = setup.server.applications["xmpp"]
        assert isinstance(app, XmppGateway) and app.muc is not None
        muc = app.muc
        assert await wait_until(lambda: muc.component.connected, timeout=60)
        async with occupant(setup, "bob", "laptop") as again:
            again.join("Bob")
            await again.joined("Bob")
            again.say("back again", id="back")
            await a.wait_text("back again")
            await a.say("welcome back")
            await again.wait(lambda s: body(s) == "welcome back")


async def test_chat_states_and_xhtml_cross(setup: Setup) -> None:
    """XEP-0085 chat states ↔ is-composing (RFC 3994) and XEP-0071 XHTML-IM ↔ text/html, in
    the room both ways."""
    states = "http://jabber.org/protocol/chatstates"
    async with sip_person("alice", "Alice") as alice, occupant(setup, "bob") as bob:
        a = await alice.join(setup.ports, ROOM, secure=False)
        bob.join("Bob")
        await bob.joined("Bob")
        typing = bob.xmpp.make_message(mto=setup.room_jid, mtype="groupchat")
        ET.SubElement(typing.xml, f"{{{states}}}composing")
        typing.send()
        got = await a.wait_for(lambda: a.messages(lambda d: d.wrapped_type == ISCOMPOSING))
        assert got
        indication = a.messages(lambda d: d.wrapped_type == ISCOMPOSING)[0]
        assert indication.cpim is not None
        assert parse_iscomposing(indication.cpim.body).state is ComposingState.ACTIVE
        await a.composing(ComposingState.ACTIVE)
        state = await bob.wait(lambda s: s.find(f"{{{states}}}composing") is not None)
        assert state.get("from") == f"{setup.room_jid}/Alice" and body(state) is None

        rich = bob.xmpp.make_message(mto=setup.room_jid, mbody="hi bold", mtype="groupchat")
        html = ET.SubElement(rich.xml, "{http://jabber.org/protocol/xhtml-im}html")
        markup = ET.SubElement(html, "{http://www.w3.org/1999/xhtml}body")
        markup.text = "hi "
        ET.SubElement(markup, "{http://www.w3.org/1999/xhtml}b").text = "bold"
        rich.send()
        assert await a.wait_for(lambda: any(d.wrapped_type == "text/html" for d in a.public()))
        sent = next(d for d in a.public() if d.wrapped_type == "text/html")
        assert "<b" in sent.text and "bold</b>" in sent.text
        assert not bob.matching(lambda s: s.get("type") == "error")


async def test_conference_info_shows_the_occupant_and_the_subject(setup: Setup) -> None:
    """A SIP watcher of the room (RFC 4575) sees the XMPP occupant as a user with a chat
    endpoint while it is in the room, and the MUC subject as the conference subject."""
    async with sip_person("alice", "Alice") as alice, occupant(setup, "bob") as bob:
        await alice.join(setup.ports, ROOM, secure=False)
        async with ConferenceWatcher(setup.ports.sip_port, ROOM) as watcher:
            assert watcher.status == 200
            bob.join("Bob")
            await bob.joined("Bob")
            uri = f"sip:bob@{setup.prosody.xmpp_domain}"
            assert await wait_until(lambda: uri in watcher.model.users, timeout=30)
            assert watcher.model.users[uri]["display-text"] == "Bob"
            subject = bob.xmpp.make_message(mto=setup.room_jid, mtype="groupchat")
            subject["subject"] = "Plans"
            subject.send()
            assert await wait_until(
                lambda: watcher.model.description.get("subject") == "Plans", timeout=30
            )
            bob.leave("Bob")
            assert await wait_until(lambda: uri not in watcher.model.users, timeout=30)
            assert not watcher.errors, watcher.errors


async def kick(person: Occupant, nick: str) -> ET.Element:
    """A muc#admin kick (XEP-0045 §8.2); the IQ's answer, result or error."""
    iq = person.xmpp.make_iq_set(ito=person.setup.room_jid)
    query = ET.SubElement(iq.xml, "{http://jabber.org/protocol/muc#admin}query")
    ET.SubElement(
        query, "{http://jabber.org/protocol/muc#admin}item", {"nick": nick, "role": "none"}
    )
    iq["id"] = f"kick-{nick}"
    iq.send()
    return await person.wait(
        lambda s: s.tag == "{jabber:client}iq" and s.get("id") == f"kick-{nick}"
    )


async def test_an_xmpp_moderators_kick_removes_the_participant(tmp_path: Path) -> None:
    """XEP-0045 §8.2 with the room's moderation rules: an XMPP user [conference] moderators
    names is a moderator occupant and may kick a SIP participant (its session gets BYE) or
    an XMPP occupant (307); not the SIP moderator (not-allowed); another occupant may not
    kick at all (forbidden)."""
    moderators = {"moderators": ["sip:bob@xmpp.localhost"]}
    async with (
        chorus_with_muc(tmp_path, conference=moderators) as setup,
        sip_person("alice", "Alice") as alice,
        sip_person("dave", "Dave") as dave,
        occupant(setup, "bob") as bob,
        occupant(setup, "carol") as carol,
    ):
        a = await alice.join(setup.ports, ROOM, secure=False)
        d = await dave.join(setup.ports, ROOM, secure=False)
        bob.join("Bob")
        await bob.joined("Bob")
        me = bob.matching(lambda s: is_self_presence(s, "Bob"))[0]
        item = me.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
        assert item is not None and item.get("role") == "moderator"
        carol.join("Carol")
        await carol.joined("Carol")
        refused = await kick(carol, "Dave")
        assert refused.get("type") == "error"
        assert refused.find(f"{{jabber:client}}error/{{{STANZAS_NS}}}forbidden") is not None
        refused = await kick(bob, "Alice")
        assert refused.find(f"{{jabber:client}}error/{{{STANZAS_NS}}}not-allowed") is not None
        done = await kick(bob, "Dave")
        assert done.get("type") == "result"
        await bob.wait(lambda s: presence_from(s, f"{setup.room_jid}/Dave", "unavailable"))
        assert await a.wait_for(
            lambda: any("Dave was removed" in n.text for n in a.notices("kicked"))
        )
        assert d.session is not None
        assert await wait_until(lambda: d.session is not None and d.session.terminated.done())
        done = await kick(bob, "Carol")
        assert done.get("type") == "result"
        gone = await carol.wait(
            lambda s: presence_from(s, f"{setup.room_jid}/Carol", "unavailable")
        )
        assert {"110", "307"} <= codes(gone)


async def test_room_moderation_applies_to_occupants(setup: Setup) -> None:
    """The room's moderation (control/conference/moderation.py) holds for MUC: a locked room
    refuses a join (forbidden), private messages switched off refuse a MUC private message
    (forbidden), and an occupant's show/status reaches the other occupants."""
    conference = setup.server.applications["conference"]
    assert isinstance(conference, ConferenceApp)
    async with (
        sip_person("alice", "Alice") as alice,
        occupant(setup, "bob") as bob,
        occupant(setup, "carol") as carol,
    ):
        await alice.join(setup.ports, ROOM, secure=False)
        bob.join("Bob")
        await bob.joined("Bob")
        room = conference.rooms[RoomId(f"{ROOM}@127.0.0.1")]
        conference.moderation.set_locked(room, True)
        carol.join("Carol")
        error = await carol.wait(lambda s: s.get("id") == "join-Carol")
        assert error.find(f"{{jabber:client}}error/{{{STANZAS_NS}}}forbidden") is not None
        conference.moderation.set_locked(room, False)
        carol.join("Carol")
        await carol.joined("Carol")

        conference.moderation.set_private_messages(room, False)
        private = bob.xmpp.make_message(mto=f"{setup.room_jid}/Alice", mbody="psst", mtype="chat")
        private["id"] = "private-off"
        private.send()
        error = await bob.wait(lambda s: s.get("id") == "private-off" and s.get("type") == "error")
        assert error.find(f"{{jabber:client}}error/{{{STANZAS_NS}}}forbidden") is not None

        bob.xmpp.send_presence(pto=f"{setup.room_jid}/Bob", pshow="away", pstatus="lunch")
        away = await carol.wait(
            lambda s: (
                presence_from(s, f"{setup.room_jid}/Bob")
                and s.findtext("{jabber:client}show") == "away"
            )
        )
        assert away.findtext("{jabber:client}status") == "lunch"


async def test_disco_lists_the_live_rooms(setup: Setup) -> None:
    """XEP-0045 §6: the service is a text conference service; its items are the live rooms;
    a room's info says MUC and how the room behaves; a room nobody is in is item-not-found."""
    async with sip_person("alice", "Alice") as alice, occupant(setup, "bob") as bob:
        await alice.join(setup.ports, ROOM, secure=False)
        bob.xmpp.register_plugin("xep_0030")
        disco = bob.xmpp.plugin["xep_0030"]
        service = await disco.get_info(jid=setup.prosody.muc_domain, timeout=30)
        assert ("conference", "text") in [i[:2] for i in service["disco_info"]["identities"]]
        assert MUC_NS in service["disco_info"]["features"]
        items = await disco.get_items(jid=setup.prosody.muc_domain, timeout=30)
        assert setup.room_jid in [str(i[0]) for i in items["disco_items"]["items"]]
        room = await disco.get_info(jid=setup.room_jid, timeout=30)
        features = room["disco_info"]["features"]
        assert MUC_NS in features and "muc_temporary" in features
        with pytest.raises(IqError) as refused:
            await disco.get_info(jid=f"nowhere@{setup.prosody.muc_domain}", timeout=30)
        assert refused.value.condition == "item-not-found"


AIOXMPP_MUC = Path(__file__).resolve().parent / "peers" / "aioxmpp_muc.py"


@pytest.mark.peer("aioxmpp")
async def test_aioxmpps_muc_client_joins_and_chats(setup: Setup) -> None:
    """An independent XEP-0045 client (aioxmpp's MUCClient, system Python): its join
    completes, its roster holds the SIP participant, its message reaches the SIP side once
    and the SIP participant's reaches it."""
    async with sip_person("alice", "Alice") as alice:
        a = await alice.join(setup.ports, ROOM, secure=False)
        prosody = setup.prosody
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/python3",
            str(AIOXMPP_MUC),
            f"carol@{prosody.xmpp_domain}/indie",
            prosody.users["carol"],
            "127.0.0.1",
            str(prosody.c2s_port),
            setup.room_jid,
            "Carol",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        events: list[dict[str, Any]] = []

        async def read() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                events.append(json.loads(line))

        reader = asyncio.create_task(read())

        def command(**fields: Any) -> None:
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(fields) + "\n").encode())

        try:
            assert await wait_until(lambda: any(e["event"] == "joined" for e in events), timeout=60)
            joined = next(e for e in events if e["event"] == "joined")
            assert "Alice" in joined["members"] and "Carol" in joined["members"]
            command(op="say", body="hello from aioxmpp")
            await a.wait_text("hello from aioxmpp")
            await a.say("hello aioxmpp")
            assert await wait_until(
                lambda: any(e.get("body") == "hello aioxmpp" for e in events), timeout=30
            )
            heard = [e for e in events if e.get("body") == "hello aioxmpp"]
            assert heard[0]["nick"] == "Alice"
            await a.say("barrier")
            assert await wait_until(
                lambda: any(e.get("body") == "barrier" for e in events), timeout=30
            )
            assert [m.text for m in a.public()].count("hello from aioxmpp") == 1
            assert len(heard) == 1
        finally:
            command(op="quit")
            await asyncio.wait_for(proc.wait(), 30)
            reader.cancel()
