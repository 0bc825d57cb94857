"""control/xmpp/chatsession.py: the RFC 7573 session table, sans-IO, with a fake clock —
routing while ringing and after, the idle deadline, who an unavailable presence ends, how a
chat message goes over MSRP; and the [xmpp] chat-session keys."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from control.config import ConfigError, parse_config
from control.msrp.cpim import CpimAddress, parse_cpim
from control.msrp.iscomposing import ISCOMPOSING_CONTENT_TYPE
from control.xmpp.addressing import Jid
from control.xmpp.chatsession import (
    ChatSessions,
    Origin,
    Routed,
    SessionKey,
    SessionsFull,
    SessionState,
    msrp_content,
)
from control.xmpp.errors import StanzaRefused
from control.xmpp.messages import Chat

BOB = Jid("bob", "xmpp.localhost")
BOB_DESK = Jid("bob", "xmpp.localhost", "desk")
BOB_PHONE = Jid("bob", "xmpp.localhost", "phone")
ALICE = Jid("alice", "sip.localhost")
KEY = SessionKey.of(BOB_DESK, ALICE)


def table(limit: int = 10, idle: float = 600.0) -> ChatSessions:
    return ChatSessions(limit=limit, idle=idle, max_queued=2)


def test_the_key_is_the_pair_of_bare_jids() -> None:
    assert SessionKey("bob@xmpp.localhost", "alice@sip.localhost") == KEY
    assert SessionKey.of(Jid("Bob", "xmpp.localhost", "x"), ALICE) == KEY


def test_messages_wait_while_the_invite_rings_then_go_in_order() -> None:
    sessions = table()
    session = sessions.open(KEY, Origin.XMPP, xmpp_peer=BOB_DESK, sip_user=ALICE, now=0.0)
    assert session.state is SessionState.STARTING
    queued = session.from_xmpp(BOB_DESK, "m1", Chat(body="one"), now=1.0, receipt=True)
    assert queued is Routed.QUEUED
    assert session.from_xmpp(BOB_DESK, "s1", Chat(state="composing"), now=1.5) is Routed.DROPPED
    assert session.from_xmpp(BOB_DESK, "m2", Chat(body="two"), now=2.0) is Routed.QUEUED
    with pytest.raises(StanzaRefused) as full:
        session.from_xmpp(BOB_DESK, "m3", Chat(body="three"), now=2.5)
    assert full.value.condition == "resource-constraint"
    waiting = session.established(now=3.0)
    assert [(q.id, q.chat.body, q.receipt) for q in waiting] == [
        ("m1", "one", True),  # the receipt it asked for is still wanted once it is sent
        ("m2", "two", False),
    ]
    assert session.state is SessionState.ACTIVE
    assert session.from_xmpp(BOB_DESK, "m4", Chat(body="four"), now=4.0) is Routed.SEND
    assert session.queue == []


def test_a_failed_invite_answers_every_waiting_message() -> None:
    session = table().open(KEY, Origin.XMPP, xmpp_peer=BOB_DESK, sip_user=ALICE, now=0.0)
    session.from_xmpp(BOB_DESK, "m1", Chat(body="one"), now=0.0)
    session.from_xmpp(BOB_DESK, "m2", Chat(body="two"), now=0.0)
    refused = session.failed(404, "Not Found")
    assert [(q.id, r.condition) for q, r in refused] == [
        ("m1", "item-not-found"),
        ("m2", "item-not-found"),
    ]
    assert "404" in refused[0][1].text
    assert session.queue == []
    assert session.end("404 Not Found") is True
    assert session.end("again") is False
    with pytest.raises(StanzaRefused):
        session.from_xmpp(BOB_DESK, "m3", Chat(body="late"), now=1.0)


def test_the_idle_deadline_moves_with_every_message_either_way() -> None:
    sessions = table(idle=10.0)
    session = sessions.open(KEY, Origin.SIP, xmpp_peer=BOB, sip_user=ALICE, now=0.0)
    session.established(now=0.0)
    assert sessions.next_deadline() == 10.0
    session.from_xmpp(BOB_DESK, "m1", Chat(body="x"), now=4.0)
    assert session.deadline == 14.0
    assert session.from_sip(now=6.0) == BOB_DESK  # locked in on the resource that wrote
    assert sessions.next_deadline() == 16.0
    assert sessions.expired(15.9) == []
    assert sessions.expired(16.0) == [session]
    session.end("idle")
    assert session.deadline is None and sessions.next_deadline() is None


def test_a_sip_started_session_writes_to_the_bare_jid_until_a_resource_answers() -> None:
    session = table().open(KEY, Origin.SIP, xmpp_peer=BOB, sip_user=ALICE, now=0.0)
    session.established(now=0.0)
    assert session.from_sip(now=1.0) == BOB
    session.from_xmpp(BOB_PHONE, "m1", Chat(body="hi"), now=2.0)
    assert session.from_sip(now=3.0) == BOB_PHONE


def test_an_unavailable_presence_ends_the_sessions_of_that_resource() -> None:
    sessions = table()
    desk = sessions.open(KEY, Origin.XMPP, xmpp_peer=BOB_DESK, sip_user=ALICE, now=0.0)
    carol = Jid("carol", "sip.localhost")
    bare = sessions.open(
        SessionKey.of(BOB, carol), Origin.SIP, xmpp_peer=BOB, sip_user=carol, now=0.0
    )
    assert sessions.of_xmpp_user(BOB_PHONE) == [bare]  # not the one locked on the desk
    assert set(map(id, sessions.of_xmpp_user(BOB_DESK))) == {id(desk), id(bare)}
    assert len(sessions.of_xmpp_user(BOB)) == 2
    assert sessions.of_xmpp_user(Jid("eve", "xmpp.localhost", "desk")) == []


def test_the_table_has_a_limit_and_one_session_per_pair() -> None:
    sessions = table(limit=1)
    session = sessions.open(KEY, Origin.SIP, xmpp_peer=BOB, sip_user=ALICE, now=0.0)
    with pytest.raises(ValueError):
        sessions.open(KEY, Origin.SIP, xmpp_peer=BOB, sip_user=ALICE, now=0.0)
    other = SessionKey.of(BOB, Jid("carol", "sip.localhost"))
    with pytest.raises(SessionsFull):
        sessions.open(other, Origin.SIP, xmpp_peer=BOB, sip_user=ALICE, now=0.0)
    sessions.discard(session)
    assert len(sessions) == 0 and sessions.find(KEY) is None
    sessions.open(other, Origin.SIP, xmpp_peer=BOB, sip_user=ALICE, now=0.0)


FROM = CpimAddress("sip:bob@xmpp.localhost")
TO = CpimAddress("sip:alice@sip.localhost")
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def content(chat: Chat, types: tuple[str, ...], wrapped: tuple[str, ...] = ("*",)) -> object:
    return msrp_content(
        chat, accept_types=types, accept_wrapped_types=wrapped, sender=FROM, recipient=TO, now=NOW
    )


def test_msrp_content_goes_bare_when_the_peer_takes_it_else_in_cpim() -> None:
    assert content(Chat(body="hi"), ("message/cpim", "text/plain")) == (
        "text/plain; charset=utf-8",
        b"hi",
    )
    assert content(Chat(body="hi"), ("*",)) == ("text/plain; charset=utf-8", b"hi")
    html = content(Chat(body="hi", xhtml="<b>hi</b>"), ("message/cpim", "text/plain"))
    assert isinstance(html, tuple) and html[0] == "message/cpim"
    cpim = parse_cpim(html[1])
    assert cpim.content_type == "text/html; charset=utf-8" and cpim.body == b"<b>hi</b>"
    assert cpim.sender == FROM and cpim.recipients == (TO,)
    with pytest.raises(StanzaRefused) as refused:  # CPIM only, and not of this type
        content(Chat(state="composing"), ("message/cpim",), ("text/*",))
    assert refused.value.condition == "not-acceptable"


def test_msrp_content_of_a_chat_state() -> None:
    state = content(Chat(state="composing"), ("text/plain", ISCOMPOSING_CONTENT_TYPE))
    assert isinstance(state, tuple) and state[0] == ISCOMPOSING_CONTENT_TYPE
    assert content(Chat(), ("*",)) is None
    with pytest.raises(StanzaRefused):
        content(Chat(body="hi"), ("application/x-other",))


def xmpp(**keys: object) -> dict[str, object]:
    return {"xmpp": {"component_jid": "sip.localhost", "component_secret": "s", **keys}}


def test_chat_session_keys_are_parsed_and_validated() -> None:
    default = parse_config(xmpp()).xmpp
    assert (default.chat_sessions, default.chat_session_idle, default.max_chat_sessions) == (
        False,
        600.0,
        1000,
    )
    keys = xmpp(chat_sessions=True, chat_session_idle=5, max_chat_sessions=3)
    config = parse_config(keys).xmpp
    assert (config.chat_sessions, config.chat_session_idle, config.max_chat_sessions) == (
        True,
        5.0,
        3,
    )
    with pytest.raises(ConfigError, match="xmpp.chat_session_idle"):
        parse_config(xmpp(chat_session_idle=0))
    with pytest.raises(ConfigError, match="xmpp.max_chat_sessions"):
        parse_config(xmpp(max_chat_sessions=0))
    with pytest.raises(ConfigError, match="xmpp.chat_sessions"):
        parse_config(xmpp(chat_sessions="yes"))
