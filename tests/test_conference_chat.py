"""The room's chat core (control.conference.chat), sans-IO: deliveries and exact CPIM bytes
for public and private messages (RFC 7701 §5, §7), nicknames (§6), is-composing (RFC 3994),
notices, history replay, SIP MESSAGE (RFC 3428) and the refusals (400/403/413/415)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from control.conference.chat import (
    ChatCore,
    ChatLimits,
    ChatMember,
    ChatSessionId,
    Delivery,
    DeliveryKind,
    identity_key,
)
from control.conference.notices import NoticeKind
from control.media.engine import ParticipantId
from control.msrp.errors import MsrpError
from control.sip.errors import SipError
from control.store import StoredMessage

ROOM = "sip:lobby@chorus.example"
WALL = datetime(2026, 12, 2, 18, 0, 0, tzinfo=UTC)


def member(session: str, participant: str, uri: str, **kw: object) -> ChatMember:
    return ChatMember(ChatSessionId(session), ParticipantId(participant), uri, **kw)  # type: ignore[arg-type]


def room(limits: ChatLimits = ChatLimits()) -> ChatCore:
    core = ChatCore("lobby@chorus.example", ROOM, "lobby", limits)
    core.add(member("a1", "pa1", "sip:alice@example.com", display_name="Alice"))
    core.add(member("b1", "pb1", "sip:bob@example.com"))
    core.add(member("c1", "pc1", "sip:carol@example.org"))
    return core


def cpim(*headers: str, content_type: str = "text/plain", body: bytes = b"hello") -> bytes:
    head = "".join(h + "\r\n" for h in headers or ("To: <sip:lobby@chorus.example>",))
    return f"{head}\r\nContent-Type: {content_type}\r\n\r\n".encode() + body


def receive(core: ChatCore, session: str, body: bytes, now: float = 0.0) -> object:
    return core.receive(
        ChatSessionId(session), "message/cpim", body, now=now, wall=WALL, message_id="m1"
    )


def targets(deliveries: object) -> list[str]:
    assert isinstance(deliveries, (list, tuple))
    return sorted(d.session for d in deliveries)


def test_identity_key_ignores_port_params_and_host_case() -> None:
    assert identity_key("sip:Alice@EXAMPLE.com:5061;transport=tls") == "sip:Alice@example.com"
    assert identity_key("sips:bob@example.com") == "sips:bob@example.com"


def test_public_message_reaches_every_other_session_with_sender_and_room() -> None:
    core = room()
    body = cpim(
        "From: <sip:alice@Example.COM>",
        "To: <sip:lobby@chorus.example>",
        "DateTime: 2026-12-02T17:59:00+01:00",
        "NS: imdn <urn:ietf:params:imdn>",
        "imdn.Message-ID: 34jk324j",
    )
    routed = receive(core, "a1", body)
    expected = (
        b'From: "Alice" <sip:alice@example.com>\r\n'
        b"To: <sip:lobby@chorus.example>\r\n"
        b"DateTime: 2026-12-02T17:59:00+01:00\r\n"
        b"NS: imdn <urn:ietf:params:imdn>\r\n"
        b"imdn.Message-ID: 34jk324j\r\n"
        b"\r\n"
        b"Content-Type: text/plain\r\n"
        b"\r\n"
        b"hello"
    )
    assert routed.deliveries == (  # type: ignore[attr-defined]
        Delivery(ChatSessionId("b1"), expected, DeliveryKind.PUBLIC),
        Delivery(ChatSessionId("c1"), expected, DeliveryKind.PUBLIC),
    )
    record = routed.record  # type: ignore[attr-defined]
    assert record == StoredMessage(
        room="lobby@chorus.example",
        message_id="m1",
        sender_uri="sip:alice@example.com",
        sender_name="Alice",
        time=datetime(2026, 12, 2, 16, 59, tzinfo=UTC),
        content_type="text/plain",
        body=b"hello",
        received=WALL,
    )


def test_missing_datetime_is_added_after_to_and_missing_to_means_the_room() -> None:
    routed = receive(room(), "b1", cpim("From: <sip:bob@example.com>"))
    assert routed.deliveries[0].body == (  # type: ignore[attr-defined]
        b"From: <sip:bob@example.com>\r\n"
        b"To: <sip:lobby@chorus.example>\r\n"
        b"DateTime: 2026-12-02T18:00:00+00:00\r\n"
        b"\r\nContent-Type: text/plain\r\n\r\nhello"
    )
    assert targets(routed.deliveries) == ["a1", "c1"]  # type: ignore[attr-defined]


def test_no_cpim_from_is_filled_with_the_sender() -> None:
    routed = receive(room(), "c1", cpim("To: <sip:lobby@chorus.example>"))
    assert routed.deliveries[0].body.startswith(b"From: <sip:carol@example.org>\r\n")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (cpim("From: <sip:mallory@example.com>"), "message/cpim", 403),
        (cpim('From: "Alice" <sip:alice@example.net>'), "message/cpim", 403),
        (b"From: <sip:alice@example.com>\r\nno blank line", "message/cpim", 400),
        (b"hello", "text/plain", 415),
    ],
)
def test_refusals(body: bytes, content_type: str, status: int) -> None:
    core = room()
    with pytest.raises(MsrpError) as caught:
        core.receive(ChatSessionId("a1"), content_type, body, now=0, wall=WALL, message_id="x")
    assert caught.value.status == status


def test_wrapped_type_the_room_refuses_is_415_and_too_big_is_413() -> None:
    core = room(ChatLimits(accept_wrapped_types=("text/*",), max_message_bytes=200))
    with pytest.raises(MsrpError) as caught:
        receive(core, "a1", cpim(content_type="image/png", body=b"\x89PNG"))
    assert caught.value.status == 415
    with pytest.raises(MsrpError) as caught:
        receive(core, "a1", cpim(body=b"x" * 300))
    assert caught.value.status == 413


def test_receiver_whose_accept_wrapped_types_exclude_the_content_is_skipped() -> None:
    core = room()
    core.add(member("d1", "pd1", "sip:dave@example.com", accept_wrapped_types=("text/plain",)))
    routed = receive(core, "a1", cpim(content_type="image/jpeg", body=b"\xff\xd8"))
    assert targets(routed.deliveries) == ["b1", "c1"]  # type: ignore[attr-defined]


def test_flood_is_refused_413_beyond_the_bucket_and_others_keep_chatting() -> None:
    core = room(ChatLimits(rate=2.0, burst=3))
    for _ in range(3):
        receive(core, "a1", cpim(), now=10.0)
    with pytest.raises(MsrpError) as caught:
        receive(core, "a1", cpim(), now=10.0)
    assert (caught.value.status, caught.value.reason) == (413, "Too many messages")
    assert targets(receive(core, "b1", cpim(), now=10.0).deliveries) == ["a1", "c1"]  # type: ignore[attr-defined]
    receive(core, "a1", cpim(), now=10.5)  # one token back after 1/rate seconds
    with pytest.raises(MsrpError):
        receive(core, "a1", cpim(), now=10.5)


def two_device_room(limits: ChatLimits = ChatLimits()) -> ChatCore:
    core = room(limits)
    core.add(member("a2", "pa2", "sip:alice@example.com"))
    core.add(member("b2", "pb2", "sip:bob@EXAMPLE.com"))
    return core


def test_private_message_reaches_the_targets_sessions_and_the_senders_other_session() -> None:
    core = two_device_room()
    body = cpim(
        "From: <sip:alice@example.com>",
        "To: <sip:bob@example.com>",
        "DateTime: 2026-12-02T18:00:00+00:00",
    )
    routed = receive(core, "a1", body)
    assert targets(routed.deliveries) == ["a2", "b1", "b2"]  # type: ignore[attr-defined]
    assert {d.kind for d in routed.deliveries} == {DeliveryKind.PRIVATE}  # type: ignore[attr-defined]
    assert routed.deliveries[0].body == (  # type: ignore[attr-defined]
        b'From: "Alice" <sip:alice@example.com>\r\n'
        b"To: <sip:bob@example.com>\r\n"
        b"DateTime: 2026-12-02T18:00:00+00:00\r\n"
        b"\r\nContent-Type: text/plain\r\n\r\nhello"
    )
    assert routed.record is None  # type: ignore[attr-defined]
    assert routed.not_found == ()  # type: ignore[attr-defined]


def test_private_to_and_cc_several_recipients_stored_when_configured() -> None:
    core = two_device_room(ChatLimits(store_private=True))
    body = cpim(
        "From: <sip:bob@example.com>",
        "To: <sip:carol@example.org>",
        "cc: <sip:nobody@example.org>",
    )
    routed = receive(core, "b2", body)
    assert targets(routed.deliveries) == ["b1", "c1"]  # type: ignore[attr-defined]
    assert routed.not_found == ("sip:nobody@example.org",)  # type: ignore[attr-defined]
    assert routed.record.recipients == ("sip:carol@example.org",)  # type: ignore[attr-defined]


def test_private_message_to_someone_not_in_the_room_is_not_found_and_goes_nowhere() -> None:
    routed = receive(room(), "a1", cpim("To: <sip:zed@example.com>"))
    assert routed.deliveries == ()  # type: ignore[attr-defined]
    assert routed.not_found == ("sip:zed@example.com",)  # type: ignore[attr-defined]


def test_is_composing_is_relayed_with_the_senders_identity_and_never_stored() -> None:
    core = room()
    xml = (
        b'<?xml version="1.0"?><isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
        b"<state>active</state></isComposing>"
    )
    routed = receive(
        core,
        "b1",
        cpim(
            "To: <sip:lobby@chorus.example>",
            content_type="application/im-iscomposing+xml",
            body=xml,
        ),
    )
    assert targets(routed.deliveries) == ["a1", "c1"]  # type: ignore[attr-defined]
    assert routed.deliveries[0].kind is DeliveryKind.COMPOSING  # type: ignore[attr-defined]
    assert routed.deliveries[0].body.startswith(b"From: <sip:bob@example.com>\r\n")  # type: ignore[attr-defined]
    assert routed.record is None  # type: ignore[attr-defined]
    bare = core.receive(
        ChatSessionId("c1"), "application/im-iscomposing+xml", xml, now=0, wall=WALL, message_id="y"
    )
    assert targets(bare.deliveries) == ["a1", "b1"]
    assert bare.deliveries[0].body == (
        b"From: <sip:carol@example.org>\r\nTo: <sip:lobby@chorus.example>\r\n"
        b"DateTime: 2026-12-02T18:00:00+00:00\r\n\r\n"
        b"Content-Type: application/im-iscomposing+xml\r\n\r\n" + xml
    )


NOTICE_HEAD = (
    b'From: "lobby" <sip:lobby@chorus.example>\r\n'
    b"To: <sip:lobby@chorus.example>\r\n"
    b"DateTime: 2026-12-02T18:00:00+00:00\r\n"
    b"NS: chorus <urn:x-chorus:cpim>\r\n"
)


def test_nickname_200_then_notice_and_display_name_425_clash_424_malformed() -> None:
    core = two_device_room()
    notices = core.set_nickname(ChatSessionId("b1"), "Bobby", WALL)
    assert targets(notices) == ["a1", "a2", "b2", "c1"]  # bob's other device learns it too
    assert notices[0].body == NOTICE_HEAD + (
        b"chorus.Notice: nickname\r\n\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"bob is now known as Bobby"
    )
    assert core.members[ChatSessionId("b2")].nickname == "Bobby"  # same identity, both devices
    assert core.set_nickname(ChatSessionId("b2"), "Bobby", WALL) == []  # no change, no notice
    with pytest.raises(MsrpError) as caught:
        core.set_nickname(ChatSessionId("c1"), "bOBBY", WALL)
    assert caught.value.status == 425
    for bad in (None, "", "   ", "a\x07b", "x" * 65):
        with pytest.raises(MsrpError) as caught:
            core.set_nickname(ChatSessionId("c1"), bad, WALL)
        assert caught.value.status == 424
    routed = receive(core, "b1", cpim())
    assert routed.deliveries[0].body.startswith(b'From: "Bobby" <sip:bob@example.com>\r\n')  # type: ignore[attr-defined]
    core.remove(ChatSessionId("b1"))
    with pytest.raises(MsrpError):  # still held by bob's other session
        core.set_nickname(ChatSessionId("c1"), "Bobby", WALL)
    core.remove(ChatSessionId("b2"))
    assert core.set_nickname(ChatSessionId("c1"), "Bobby", WALL) != []


def test_notice_goes_to_everyone_but_the_excluded_participant() -> None:
    core = room()
    notices = core.notice(
        NoticeKind.JOINED, "carol joined", WALL, exclude_participant=ParticipantId("pc1")
    )
    assert targets(notices) == ["a1", "b1"]
    assert notices[0].body == NOTICE_HEAD + (
        b"chorus.Notice: joined\r\n\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ncarol joined"
    )


def stored(text: str, *, recipients: tuple[str, ...] | None = None) -> StoredMessage:
    return StoredMessage(
        room="lobby@chorus.example",
        message_id=text,
        sender_uri="sip:alice@example.com",
        sender_name="Ali",
        time=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        content_type="text/plain",
        body=text.encode(),
        recipients=recipients,
    )


def test_history_replay_keeps_sender_time_order_and_is_marked() -> None:
    core = room()
    replayed = core.replay(
        ChatSessionId("c1"),
        [stored("one"), stored("two"), stored("secret", recipients=("sip:bob@example.com",))],
    )
    assert [d.kind for d in replayed] == [DeliveryKind.HISTORY] * 2
    assert replayed[0].body == (
        b'From: "Ali" <sip:alice@example.com>\r\n'
        b"To: <sip:lobby@chorus.example>\r\n"
        b"DateTime: 2026-12-01T09:30:00+00:00\r\n"
        b"NS: chorus <urn:x-chorus:cpim>\r\n"
        b"chorus.History: yes\r\n"
        b"\r\nContent-Type: text/plain\r\n\r\none"
    )
    assert replayed[1].body.endswith(b"two")
    to_bob = core.replay(
        ChatSessionId("b1"), [stored("secret", recipients=("sip:bob@example.com",))]
    )
    assert len(to_bob) == 1 and b"To: <sip:bob@example.com>\r\n" in to_bob[0].body


def test_sip_message_is_public_from_its_sender_and_refuses_size_and_type() -> None:
    core = room(ChatLimits(max_message_bytes=100))
    core.set_nickname(ChatSessionId("a1"), "Ali", WALL)
    routed = core.receive_pager(
        "sip:alice@example.com", "Alice S", "text/plain; charset=utf-8", b"hi all",
        wall=WALL, message_id="p1",
    )  # fmt: skip
    assert targets(routed.deliveries) == ["a1", "b1", "c1"]  # every chat session: none sent it
    assert routed.deliveries[0].body == (
        b'From: "Ali" <sip:alice@example.com>\r\nTo: <sip:lobby@chorus.example>\r\n'
        b"DateTime: 2026-12-02T18:00:00+00:00\r\n\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nhi all"
    )
    assert routed.record is not None and routed.record.body == b"hi all"
    for content_type, body, status in (
        ("application/json", b"{}", 415),
        ("text/plain", b"x" * 101, 413),
        ("message/cpim", cpim("From: <sip:eve@example.com>"), 403),
    ):
        with pytest.raises(SipError) as caught:
            core.receive_pager(
                "sip:alice@example.com", None, content_type, body, wall=WALL, message_id="p"
            )
        assert caught.value.status == status


def test_sip_message_senders_have_their_own_bucket_503_beyond_it() -> None:
    core = room(ChatLimits(rate=1.0, burst=2))

    def pager(sender: str, now: float) -> None:
        core.receive_pager(sender, None, "text/plain", b"x", wall=WALL, message_id="p", now=now)

    pager("sip:spam@example.net", 5.0)
    pager("sip:spam@EXAMPLE.net:5070", 5.0)  # the same sender, whatever port or host case
    with pytest.raises(SipError) as caught:
        pager("sip:spam@example.net", 5.0)
    assert (caught.value.status, caught.value.reason) == (503, "Too many messages")
    pager("sip:other@example.net", 5.0)  # another sender is not held up
    pager("sip:spam@example.net", 6.0)  # a token back a second later


def test_screen_sharing_frames_are_neither_relayed_nor_stored() -> None:
    """Issue 9: a blink-screensharing frame goes to the screen board (Routed.screen), never to
    the other chat sessions nor the history."""
    frame = cpim(content_type="application/blink-screensharing", body=b"\xff\xd8\xff\xe0")
    routed = receive(room(), "a1", frame)
    assert routed.deliveries == ()  # type: ignore[attr-defined]
    assert routed.record is None  # type: ignore[attr-defined]
    assert routed.screen is not None  # type: ignore[attr-defined]
    assert routed.screen.body == b"\xff\xd8\xff\xe0"  # type: ignore[attr-defined]
