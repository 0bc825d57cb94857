"""XMPP occupants (MUC, control/xmpp/mucgw.py) in conference-info: a chat-only member of the
room is a user with one endpoint per chat session and its chat media; the MUC subject is the
conference-description subject. Documents checked against the RFC 4575 schema."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from control.conference.chat import ChatMember, ChatSessionId
from control.conference.info import render_full
from control.media.engine import ParticipantId
from control.streams import MediaKind
from tests.peers.confinfo import model_of, world

SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).parent / "data" / "conference-info.xsd")))
BOB = "sip:bob@xmpp.example"


def test_a_chat_only_member_is_a_user_and_the_subject_is_shown() -> None:
    w = world()
    w.join("alice", "Alice", (MediaKind.AUDIO, MediaKind.CHAT))
    for session in ("xmpp-1", "xmpp-2"):  # one XMPP user on two resources
        member = ChatMember(
            ChatSessionId(session),
            ParticipantId(f"xmpp:{BOB}"),
            BOB,
            "Bob",
            nickname="Bob",
            joined_at=1_700_000_100.0,
        )
        w.chat.core.add(member)
    w.room.subject = "Plans"
    snap = w.snapshot()
    SCHEMA.assertValid(etree.fromstring(render_full(snap)))
    model = model_of(snap)
    assert model.description["subject"] == "Plans"
    assert set(model.users) == {"sip:alice@example.com", BOB}
    bob = model.users[BOB]
    assert bob["display-text"] == "Bob" and bob["roles"] == ("participant",)
    assert set(bob["endpoints"]) == {f"{BOB};id=xmpp-1", f"{BOB};id=xmpp-2"}
    display, status, joined, media = bob["endpoints"][f"{BOB};id=xmpp-1"]
    assert (display, status) == ("Bob", "connected")
    assert joined.startswith("2023-11-14T22:")
    assert [m[1] for m in media] == ["message"]
    assert model.state["user-count"] == "2"


def test_a_participants_chat_session_is_not_a_second_user() -> None:
    w = world()
    w.join("alice", "Alice", (MediaKind.CHAT,))
    assert set(model_of(w.snapshot()).users) == {"sip:alice@example.com"}
