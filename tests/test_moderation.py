"""Moderation (control/conference/moderation.py): admission by lock and PIN, roles, PIN by
keypad, mute/kick/lock/PIN/private messages/end as actions with their notices and the room
change hook; DTMF surfaced by the embedded mixer as DtmfReceived events (real UDP)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

import pytest

from control.conference.chat import ChatCore, ChatMember, ChatSessionId
from control.conference.moderation import (
    Moderation,
    ModerationPolicy,
    RoomSettings,
    check_pin,
    find_participant,
    pin_of,
)
from control.conference.notices import NoticeKind
from control.conference.participant import MODERATOR, PARTICIPANT, Participant
from control.conference.room import Room
from control.config import ConfigError, parse_config
from control.media.engine import DtmfReceived, ParticipantId, RoomId
from control.msrp.errors import MsrpError
from control.sip import sdp
from control.sip.errors import SipError
from control.sip.session import Session
from control.sip.uri import NameAddr, SipUri, parse_uri
from control.streams import MediaKind, Stream
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.wait import wait_until
from tests.test_media_mixer import ROOM, _drain, _join, _mixed_past, make_mixer


class RecordingHost:
    """A named fake of the conference application's side (ModerationHost): records what
    moderation asked for; the live tests drive the real one."""

    def __init__(self) -> None:
        self.muted: list[tuple[str, bool]] = []
        self.held: list[tuple[str, bool]] = []
        self.ended: list[tuple[str, str]] = []
        self.changes = 0

    async def mute_audio(self, room: Room, participant: Participant, muted: bool) -> None:
        self.muted.append((participant.id, muted))

    async def hold_audio(self, room: Room, participant: Participant, held: bool) -> None:
        self.held.append((participant.id, held))

    async def end_participant(self, participant: Participant, reason: str) -> None:
        self.ended.append((participant.id, reason))

    def room_changed(self, room: Room) -> None:
        self.changes += 1


class NoticeLog:
    """Stands in for the room chat's notice(): the kinds and texts announced."""

    def __init__(self) -> None:
        self.core = ChatCore("r@h", "sip:r@h", "r")
        self.sent: list[tuple[NoticeKind, str]] = []

    def notice(self, kind: NoticeKind, text: str, **_: object) -> None:
        self.sent.append((kind, text))

    def attach(self, member: ChatMember, channel: object) -> None:
        self.core.add(member)

    def detach(self, session: ChatSessionId) -> None:
        self.core.remove(session)


def _uri(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def _room(name: str = "r") -> tuple[Room, NoticeLog]:
    room = Room(RoomId(f"{name}@h"), _uri(f"sip:{name}@h"), max_participants=10)
    log = NoticeLog()
    room.chat = cast(object, log)  # type: ignore[assignment]
    return room, log


def _person(pid: str, uri: str, *, awaiting: bool = False) -> Participant:
    identity = NameAddr(_uri(uri), None)
    p = Participant(
        ParticipantId(pid),
        identity,
        cast(Session, object()),
        sdp.SdpSession(sess_id=1, address="127.0.0.1"),
    )
    p.awaiting_pin = awaiting
    return p


def _moderation(**policy: object) -> tuple[Moderation, RecordingHost]:
    host = RecordingHost()
    return Moderation(ModerationPolicy(**policy), host), host  # type: ignore[arg-type]


def test_pin_of_reads_the_uri_header_or_parameter() -> None:
    assert pin_of(_uri("sip:r@h?pin=1234")) == "1234"
    assert pin_of(_uri("sip:r@h;pin=1"), "55") == "55", "the Pin header field first"
    assert pin_of(_uri("sip:r@h;pin=99")) == "99"
    assert pin_of(_uri("sip:r@h")) is None
    assert check_pin(" 12ab ") == "12AB"
    for bad in ("", "12#", "x1", "1" * 33):
        with pytest.raises(ValueError):
            check_pin(bad)


def test_locked_room_refuses_403_with_reason() -> None:
    moderation, _ = _moderation()
    room, _ = _room()
    room.locked = True
    with pytest.raises(SipError) as caught:
        moderation.admit(room, room.uri, "sip:a@h", keypad=True)
    assert (caught.value.status, caught.value.reason) == (403, "Room is locked")


def test_pin_right_wrong_missing() -> None:
    moderation, _ = _moderation(rooms={"r": RoomSettings(pin="4321")})
    room, _ = _room()
    moderation.room_opened(room)
    assert room.pin == "4321"
    assert not moderation.admit(room, _uri("sip:r@h?pin=4321"), "sip:a@h", keypad=True).awaiting_pin
    with pytest.raises(SipError) as caught:
        moderation.admit(room, _uri("sip:r@h?pin=1111"), "sip:a@h", keypad=True)
    assert (caught.value.status, caught.value.reason) == (403, "Wrong PIN")
    assert moderation.admit(room, room.uri, "sip:a@h", keypad=True).awaiting_pin
    with pytest.raises(SipError) as caught:
        moderation.admit(room, room.uri, "sip:a@h", keypad=False)
    assert (caught.value.status, caught.value.reason) == (403, "PIN required")


def test_roles_by_pattern_and_creator() -> None:
    moderation, _ = _moderation(moderators=("sip:boss@*",))
    room, _ = _room()
    assert moderation.admit(room, room.uri, "sip:first@h", keypad=True).role == MODERATOR
    room.add(_person("p1", "sip:first@h"))
    assert moderation.admit(room, room.uri, "sip:second@h", keypad=True).role == PARTICIPANT
    assert moderation.admit(room, room.uri, "sip:BOSS@example.org", keypad=True).role == MODERATOR
    quiet, _ = _moderation(creator_moderates=False)
    other, _ = _room("o")
    assert quiet.admit(other, other.uri, "sip:first@h", keypad=True).role == PARTICIPANT


async def test_keypad_pin_lets_in_and_wrong_pins_end() -> None:
    moderation, host = _moderation(rooms={"r": RoomSettings(pin="12")}, pin_attempts=2)
    room, log = _room()
    moderation.room_opened(room)
    waiting = _person("w", "sip:w@h", awaiting=True)
    room.add(waiting)
    await moderation.joined(room, waiting)
    assert host.changes == 1
    assert not log.sent, "a caller awaiting the PIN is not announced"
    for key in "12#":
        await moderation.digit(room, waiting, key)
    assert not waiting.awaiting_pin
    assert host.held == [("w", False)]
    assert log.sent[-1][0] is NoticeKind.JOINED
    # Another caller keys wrong twice: ended.
    bad = _person("b", "sip:b@h", awaiting=True)
    room.add(bad)
    for key in "9#9#":
        await moderation.digit(room, bad, key)
    assert host.ended == [("b", "wrong PIN")]
    assert bad.awaiting_pin


async def test_actions_notice_and_hook() -> None:
    moderation, host = _moderation()
    room, log = _room()
    alice, bob = _person("a", "sip:alice@h"), _person("b", "sip:bob@h")
    bob_again = _person("b2", "sip:bob@h")
    for p in (alice, bob, bob_again):
        room.add(p)
    log.sent.clear()
    await moderation.set_muted(room, bob, True)
    assert bob.muted and host.muted == [("b", True)]
    await moderation.set_muted(room, bob, False)
    assert not bob.muted and host.muted[-1] == ("b", False)
    moderation.set_locked(room, True)
    assert room.locked
    await moderation.set_pin(room, "77")
    assert room.pin == "77"
    await moderation.set_pin(room, None)
    assert room.pin is None
    moderation.set_private_messages(room, False)
    assert room.chat is not None and not room.chat.core.private_messages
    await moderation.kick(room, bob)
    assert host.ended == [("b", "kicked"), ("b2", "kicked")], "every session of bob"
    kinds = [kind for kind, _ in log.sent]
    assert kinds == [
        NoticeKind.MUTED,
        NoticeKind.UNMUTED,
        NoticeKind.LOCKED,
        NoticeKind.PIN_SET,
        NoticeKind.PIN_CLEARED,
        NoticeKind.PRIVATE_OFF,
        NoticeKind.KICKED,
        NoticeKind.KICKED,
    ]
    assert host.changes == 6
    assert await moderation.end_room(room) == 3
    assert log.sent[-1][0] is NoticeKind.ROOM_ENDED
    assert find_participant(room, "alice@h") is alice
    assert find_participant(room, "a") is alice
    assert find_participant(room, "nobody") is None


def test_private_messages_disabled_refused_403() -> None:
    core = ChatCore("r@h", "sip:r@h", "r")
    a = ChatMember(ChatSessionId("s1"), ParticipantId("a"), "sip:alice@h", None)
    b = ChatMember(ChatSessionId("s2"), ParticipantId("b"), "sip:bob@h", None)
    core.add(a)
    core.add(b)
    body = b"From: <sip:alice@h>\r\nTo: <sip:bob@h>\r\n\r\nContent-Type: text/plain\r\n\r\nhello"
    when = {"now": 0.0, "wall": datetime.now(UTC), "message_id": "m"}
    assert core.receive(ChatSessionId("s1"), "message/cpim", body, **when).deliveries  # type: ignore[arg-type]
    core.private_messages = False
    with pytest.raises(MsrpError) as caught:
        core.receive(ChatSessionId("s1"), "message/cpim", body, **when)  # type: ignore[arg-type]
    assert caught.value.status == 403


async def test_mixer_surfaces_dtmf_once_per_key() -> None:
    engine = make_mixer(11)
    peer = RtpEndpoint("PCMU", 8000, 0, seed=3)
    try:
        [pid] = await _join(engine, [peer])
        seen: list[str] = []

        def digits() -> bool:
            seen.extend(e.digit for e in _drain(engine) if isinstance(e, DtmfReceived))
            return len(seen) >= 4

        await peer.send_dtmf("19*#")
        assert await wait_until(digits)
        assert seen == ["1", "9", "*", "#"], "each key exactly once, in order"
        assert pid == ParticipantId("p0")
    finally:
        peer.close()
        await engine.close()
        await asyncio.sleep(0)


async def test_new_audio_of_a_muted_participant_starts_muted() -> None:
    moderation, host = _moderation()
    room, _ = _room()
    bob = _person("b", "sip:bob@h")
    room.add(bob)
    audio = cast(Stream, SimpleNamespace(kind=MediaKind.AUDIO))
    chat = cast(Stream, SimpleNamespace(kind=MediaKind.CHAT))
    await moderation.streams_added(room, bob, [audio])
    assert host.muted == [], "an unmuted participant's new audio is mixed"
    await moderation.set_muted(room, bob, True)
    await moderation.streams_added(room, bob, [chat])
    await moderation.streams_added(room, bob, [audio])
    assert host.muted == [("b", True), ("b", True)]
    waiting = _person("w", "sip:w@h", awaiting=True)
    room.add(waiting)
    await moderation.streams_added(room, waiting, [audio])
    assert host.held == [("w", True)]


async def test_mixer_sends_a_deaf_listener_nothing() -> None:
    engine = make_mixer(12)
    talker, held = RtpEndpoint("PCMU", 8000, 0, seed=5), RtpEndpoint("PCMU", 8000, 0, seed=6)
    try:
        _, held_id = await _join(engine, [talker, held])
        await engine.set_deaf(ROOM, held_id, True)
        before = len(held.packets())
        await talker.play(440.0, 0.5)
        assert await _mixed_past(talker), "the room stopped sending"
        assert len(held.packets()) == before, "a deaf listener was sent the room"
        await engine.set_deaf(ROOM, held_id, False)
        assert await _mixed_past(held), "sending did not resume"
    finally:
        talker.close()
        held.close()
        await engine.close()


def test_config_rooms_and_api_validated() -> None:
    config = parse_config(
        {
            "conference": {
                "moderators": ["sip:*@ops.example.com"],
                "pin_attempts": 5,
                "rooms": {"Vault": {"pin": "12ab", "locked": True, "private_messages": False}},
            },
            "api": {"listen": "http:127.0.0.1:8700", "token": "s" * 16},
        }
    )
    policy = ModerationPolicy.from_config(config.conference)
    settings = policy.settings("vault@conf.example.com")
    assert (settings.pin, settings.locked, settings.private_messages) == ("12AB", True, False)
    assert policy.settings("other@conf.example.com") == RoomSettings()
    assert (policy.moderators, policy.pin_attempts) == (("sip:*@ops.example.com",), 5)
    assert (config.api.listen.port, config.api.token) == (8700, "s" * 16)
    for bad in (
        {"conference": {"rooms": {"v": {"pin": "12#"}}}},
        {"conference": {"rooms": {"v": {"colour": "red"}}}},
        {"conference": {"pin_attempts": 0}},
        {"api": {"listen": "http:0.0.0.0:8700"}},
        {"api": {"listen": "https:127.0.0.1:8700"}},
        {"api": {"token": "short"}},
    ):
        with pytest.raises(ConfigError):
            parse_config(bad)
