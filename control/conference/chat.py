"""The chat of one room, sans-IO: who is in it, what a message becomes and where it goes.

Fed the room's chat sessions (identity, nickname, a=accept-wrapped-types) and each complete
message with the time, it decides the deliveries and builds every CPIM body (RFC 3862); the
asyncio layer (:mod:`control.conference.fanout`) only writes them. RFC 7701 shapes it:

- A public message (CPIM ``To`` the room, or no ``To``) goes to every chat session of the room
  but the one it came on, ``From`` = the sender's SIP URI with their nickname as display name
  (§5), ``To`` = the room, ``DateTime`` kept or added, every other header kept.
- A private message names participants' URIs in ``To``/``cc`` (§7, SylkServer's form): it goes
  to every session of those participants and back to the sender's other sessions, never to
  anyone else. A recipient who is not in the room is reported (404 semantics, §7.1).
- An is-composing indication (RFC 3994), bare or wrapped, travels like a message but is
  never stored.
- A CPIM ``From`` that is not the sender's SIP identity is refused 403 (§9: the focus vouches
  for identities); malformed CPIM 400, a wrapped type we refuse 415, too big or too fast 413.
- A screen-sharing frame (CPIM ``application/blink-screensharing``, the reference page's
  ``com.ag-projects.screen-sharing`` extension) is not conversation: it is neither relayed
  nor stored but handed back as :attr:`Routed.screen` for the screen board
  (:mod:`control.conference.screen`), which checks its own size cap.

Identities compare as scheme + user + host, host case-insensitive (RFC 3261 §19.1.4 in spirit:
parameters and port do not make another person).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import NewType

from control.media.engine import ParticipantId
from control.msrp.cpim import (
    CPIM_CONTENT_TYPE,
    CpimAddress,
    CpimHeader,
    CpimMessage,
    check_content_type,
    format_datetime,
    parse_cpim,
)
from control.msrp.errors import CpimError, MsrpError
from control.msrp.iscomposing import ISCOMPOSING_CONTENT_TYPE, parse_iscomposing
from control.msrp.xmldoc import MAX_XML_SIZE
from control.sip.errors import SipError
from control.sip.uri import SipUri, parse_uri
from control.store import StoredMessage

from .nicknames import NicknameBook, check_nickname
from .notices import NoticeKind, build_notice, chorus_headers, notice_text
from .ratelimit import TokenBucket
from .screen import is_screen_frame

__all__ = [
    "ChatCore",
    "ChatLimits",
    "ChatMember",
    "ChatSessionId",
    "Delivery",
    "DeliveryKind",
    "Routed",
    "identity_key",
]

ChatSessionId = NewType("ChatSessionId", str)
"""One chat stream (its MSRP session id): a participant may have several."""

TOO_MANY = "Too many messages"
TOO_LARGE = "Message too large for the room"
PRIVATE_DISABLED = "Private messages are disabled in this room"
PAGER_SENDERS = 1024  # SIP MESSAGE senders whose rate a room remembers


class DeliveryKind(Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    COMPOSING = "composing"
    NOTICE = "notice"
    HISTORY = "history"


def identity_key(uri: str) -> str:
    """``scheme:user@host`` with the host lower-cased; ValueError when not a SIP URI."""
    try:
        parsed = parse_uri(uri.strip())
    except SipError:
        raise ValueError(f"not a URI: {uri[:60]!r}") from None
    if not isinstance(parsed, SipUri):
        return str(parsed).lower()
    user = parsed.unescaped_user()
    return f"{parsed.scheme}:{user}@{parsed.host}" if user else f"{parsed.scheme}:{parsed.host}"


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass(slots=True)
class ChatMember:
    """One chat session in the room."""

    session: ChatSessionId
    participant: ParticipantId
    uri: str  # the sender's SIP identity (From URI of their INVITE, no parameters)
    display_name: str | None = None  # from SIP, used while no nickname is set
    accept_wrapped_types: tuple[str, ...] = ("*",)
    nickname: str | None = None
    joined_at: float | None = None  # a chat-only member's join (conference-info shows it)
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = identity_key(self.uri)

    @property
    def shown_name(self) -> str:
        """How others see this member: nickname, else SIP display name, else the user part."""
        if self.nickname:
            return self.nickname
        if self.display_name:
            return self.display_name
        return self.uri.partition(":")[2].partition("@")[0] or self.uri

    @property
    def address(self) -> CpimAddress:
        return CpimAddress(self.uri, self.nickname or self.display_name)

    def accepts(self, content_type: str | None) -> bool:
        media = _media_type(content_type)
        major = media.split("/", 1)[0]
        return any(
            p == "*" or p == media or p == f"{major}/*"
            for p in (t.strip().lower() for t in self.accept_wrapped_types)
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    session: ChatSessionId
    body: bytes  # a message/cpim body
    kind: DeliveryKind
    content_type: str = CPIM_CONTENT_TYPE


@dataclass(frozen=True, slots=True)
class Routed:
    """The outcome of one accepted message."""

    deliveries: tuple[Delivery, ...]
    record: StoredMessage | None  # what to store, None for what is never stored
    not_found: tuple[str, ...] = ()  # private recipients not in the room (404, RFC 7701 §7.1)
    screen: CpimMessage | None = None  # a screen-sharing frame, for the board (never relayed)


@dataclass(frozen=True, slots=True)
class ChatLimits:
    rate: float = 20.0  # messages a second per participant ([conference] chat_rate)
    burst: int = 50  # messages at once ([conference] chat_burst)
    max_message_bytes: int = 1024 * 1024  # one CPIM body
    store_private: bool = False  # [conference] store_private
    accept_wrapped_types: tuple[str, ...] = ("*",)  # what the room takes inside CPIM


def _check_composing(body: bytes) -> None:
    """An is-composing document is parsed by the hardened parser (control/xmlsafe.py) before
    it is relayed: a bomb, an external entity or an oversized one is refused to its sender
    (413, or IsComposingError's 400), never passed on to the room."""
    if len(body) > MAX_XML_SIZE:
        raise MsrpError(413, "is-composing document too large", comment="XML document too large")
    parse_iscomposing(body)


class ChatCore:
    """The room's chat state (members, nicknames, rate buckets) and its routing decisions."""

    def __init__(
        self, room_id: str, room_uri: str, room_name: str, limits: ChatLimits = ChatLimits()
    ) -> None:
        self.room_id = room_id  # the store's key for this room
        self.room = CpimAddress(room_uri)
        self.room_key = identity_key(room_uri)
        self.notice_sender = CpimAddress(room_uri, room_name)
        self.limits = limits
        self.private_messages = True  # False: a private message is refused 403 (moderation)
        self.members: dict[ChatSessionId, ChatMember] = {}
        self.nicknames = NicknameBook()
        self._buckets: dict[ParticipantId, TokenBucket] = {}
        self._pager_buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    # --- membership ------------------------------------------------------------------------

    def add(self, member: ChatMember) -> None:
        """A new chat session; it takes the nickname its identity already holds, if any."""
        if member.nickname is None:
            member.nickname = next(
                (m.nickname for m in self.members.values() if m.key == member.key and m.nickname),
                None,
            )
        self.members[member.session] = member

    def remove(self, session: ChatSessionId) -> ChatMember | None:
        member = self.members.pop(session, None)
        if member is None:
            return None
        if not any(m.participant == member.participant for m in self.members.values()):
            self._buckets.pop(member.participant, None)
        if member.nickname and not any(
            m.key == member.key and m.nickname == member.nickname for m in self.members.values()
        ):
            self.nicknames.release(member.key, member.nickname)
        return member

    def sessions_of(self, participant: ParticipantId) -> list[ChatMember]:
        return [m for m in self.members.values() if m.participant == participant]

    # --- nicknames -------------------------------------------------------------------------

    def set_nickname(
        self, session: ChatSessionId, requested: str | None, now: datetime
    ) -> list[Delivery]:
        """RFC 7701 §6.1: 200 (returning the notices to send), or MsrpError 424/425."""
        member = self.members.get(session)
        if member is None:
            raise MsrpError(481, "no such chat session in this room")
        nickname = check_nickname(requested)
        previous = member.nickname
        self.nicknames.claim(member.key, nickname, previous)
        old_name = member.shown_name
        for other in self.members.values():
            if other.key == member.key:
                other.nickname = nickname
        if previous == nickname:
            return []
        text = notice_text(NoticeKind.NICKNAME, old_name, nickname)
        return self.notice(NoticeKind.NICKNAME, text, now, exclude=session)

    # --- notices and history ---------------------------------------------------------------

    def notice(
        self,
        kind: NoticeKind,
        text: str,
        now: datetime,
        *,
        exclude: ChatSessionId | None = None,
        exclude_participant: ParticipantId | None = None,
        details: Sequence[tuple[str, str]] = (),
    ) -> list[Delivery]:
        """The same notice to every chat session but the excluded ones."""
        body = build_notice(self.notice_sender, kind, text, now, details)
        return [
            Delivery(m.session, body, DeliveryKind.NOTICE)
            for m in self.members.values()
            if m.session != exclude and m.participant != exclude_participant
        ]

    def replay(self, session: ChatSessionId, records: Iterable[StoredMessage]) -> list[Delivery]:
        """History for a new chat stream, in the order given, each with its original sender
        and time and ``chorus.History: yes``; what the session cannot take is left out."""
        member = self.members.get(session)
        if member is None:
            return []
        out = []
        for record in records:
            if not member.accepts(record.content_type):
                continue
            private_to = record.recipients or ()
            if private_to and member.key not in {
                _key_or_none(record.sender_uri),
                *(_key_or_none(u) for u in private_to),
            }:
                continue  # a private message is replayed to its parties only
            recipients = [CpimAddress(u) for u in private_to] or [self.room]
            headers = [
                CpimHeader("From", str(CpimAddress(record.sender_uri, record.sender_name))),
                *(CpimHeader("To", str(r)) for r in recipients),
                CpimHeader("DateTime", format_datetime(record.time)),
                *chorus_headers("History", "yes"),
            ]
            body = CpimMessage(
                tuple(headers), (("Content-Type", record.content_type),), record.body
            ).serialize()
            out.append(Delivery(session, body, DeliveryKind.HISTORY))
        return out

    # --- messages --------------------------------------------------------------------------

    def receive(
        self,
        session: ChatSessionId,
        content_type: str | None,
        body: bytes,
        *,
        now: float,
        wall: datetime,
        message_id: str,
    ) -> Routed:
        """Route one complete message from a chat session, or raise MsrpError with the
        status its last chunk is answered with (see the module doc). ``now`` is the rate
        limiter's monotonic clock, ``wall`` the UTC time, ``message_id`` names the record."""
        member = self.members.get(session)
        if member is None:
            raise MsrpError(481, "no such chat session in this room")
        media = _media_type(content_type)
        too_big = len(body) > self.limits.max_message_bytes
        if media == ISCOMPOSING_CONTENT_TYPE:  # bare RFC 3994 indication
            message = CpimMessage.build(content_type=content_type or media, body=body)
        elif media == CPIM_CONTENT_TYPE:
            try:
                message = parse_cpim(body)  # CpimError 400
            except CpimError:
                if too_big:
                    raise MsrpError(413, TOO_LARGE, comment=TOO_LARGE) from None
                raise
        else:
            self._admit(member.participant, len(body), now)
            raise MsrpError(415, f"{media or 'no content type'} is not message/cpim")
        screen = is_screen_frame(message.content_type)
        # A frame's size is the screen board's to judge ([screen] max_frame_bytes).
        self._admit(member.participant, 0 if screen else len(body), now)
        sender = message.sender
        if sender is not None and _key_or_none(sender.uri) != member.key:
            raise MsrpError(403, "CPIM From is not the sender's identity")
        if screen:
            return Routed((), None, screen=message)
        return self._route(member, message, wall, message_id)

    def receive_pager(
        self,
        sender_uri: str,
        display_name: str | None,
        content_type: str,
        body: bytes,
        *,
        wall: datetime,
        message_id: str,
        now: float | None = None,
    ) -> Routed:
        """A SIP MESSAGE to the room (RFC 3428): always public, from the MESSAGE's From.
        SipError 413/415/403/400 for what cannot be relayed, 503 beyond the sender's rate
        (the same bucket sizes as chat, per sender URI, when ``now`` is given)."""
        if len(body) > self.limits.max_message_bytes:
            raise SipError(413, TOO_LARGE)
        if now is not None and not self._pager_bucket(sender_uri, now).take(now):
            raise SipError(503, TOO_MANY)
        media = _media_type(content_type)
        name = next(
            (m.nickname for m in self.members.values() if m.key == _key_or_none(sender_uri)),
            None,
        )
        if media == CPIM_CONTENT_TYPE:
            try:
                message = parse_cpim(body)
                sender = message.sender
            except CpimError as exc:
                raise SipError(400, exc.reason) from None
            if sender is not None and _key_or_none(sender.uri) != _key_or_none(sender_uri):
                raise SipError(403, "CPIM From is not the sender's identity")
        elif media in ("text/plain", "text/html"):
            message = CpimMessage.build(content_type=content_type, body=body)
        else:
            raise SipError(415, f"{media or 'no content type'} cannot be relayed to the room")
        if is_screen_frame(message.content_type):
            raise SipError(415, "screen frames go over the chat stream, not SIP MESSAGE")
        if _media_type(message.content_type) == ISCOMPOSING_CONTENT_TYPE:
            try:  # the hardened parser, as over MSRP: a bomb is refused, never relayed
                _check_composing(message.body)
            except MsrpError as exc:
                raise SipError(exc.status, exc.reason) from None
        pseudo = ChatMember(ChatSessionId(""), ParticipantId(""), sender_uri, name or display_name)
        return self._public(pseudo, message, wall, message_id)

    def _pager_bucket(self, sender_uri: str, now: float) -> TokenBucket:
        """One bucket per MESSAGE sender, the least recently used forgotten past
        :data:`PAGER_SENDERS` (a From that changes every time buys nothing but a fresh burst)."""
        key = _key_or_none(sender_uri) or sender_uri
        bucket = self._pager_buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.limits.rate, self.limits.burst, now=now)
        self._pager_buckets[key] = bucket
        while len(self._pager_buckets) > PAGER_SENDERS:
            self._pager_buckets.popitem(last=False)
        return bucket

    def _admit(self, participant: ParticipantId, size: int, now: float) -> None:
        if size > self.limits.max_message_bytes:
            raise MsrpError(413, TOO_LARGE, comment=TOO_LARGE)
        bucket = self._buckets.get(participant)
        if bucket is None:
            bucket = self._buckets[participant] = TokenBucket(
                self.limits.rate, self.limits.burst, now=now
            )
        if not bucket.take(now):
            raise MsrpError(413, TOO_MANY, comment=TOO_MANY)

    def _route(
        self, member: ChatMember, message: CpimMessage, wall: datetime, message_id: str
    ) -> Routed:
        check_content_type(message, self.limits.accept_wrapped_types)  # CpimError 415
        if _media_type(message.content_type) == ISCOMPOSING_CONTENT_TYPE:
            _check_composing(message.body)
        recipients = [*message.recipients, *message.cc]  # CpimError 400 when malformed
        named = [r for r in recipients if _key_or_none(r.uri) != self.room_key]
        if named and not self.private_messages:
            raise MsrpError(403, PRIVATE_DISABLED, comment=PRIVATE_DISABLED)
        if named:
            return self._private(member, message, named, wall, message_id)
        return self._public(member, message, wall, message_id)

    def _public(
        self, sender: ChatMember, message: CpimMessage, wall: datetime, message_id: str
    ) -> Routed:
        composing = _media_type(message.content_type) == ISCOMPOSING_CONTENT_TYPE
        body, sent_at = _readdress(message, sender.address, [self.room], wall)
        kind = DeliveryKind.COMPOSING if composing else DeliveryKind.PUBLIC
        deliveries = tuple(
            Delivery(m.session, body, kind)
            for m in self.members.values()
            if m.session != sender.session and m.accepts(message.content_type)
        )
        record = None if composing else self._record(sender, message, sent_at, wall, message_id)
        return Routed(deliveries, record)

    def _private(
        self,
        sender: ChatMember,
        message: CpimMessage,
        named: Sequence[CpimAddress],
        wall: datetime,
        message_id: str,
    ) -> Routed:
        composing = _media_type(message.content_type) == ISCOMPOSING_CONTENT_TYPE
        keys = {_key_or_none(r.uri) for r in named}
        present = {m.key for m in self.members.values()}
        not_found = tuple(r.uri for r in named if _key_or_none(r.uri) not in present)
        found = [r for r in named if _key_or_none(r.uri) in present]
        kind = DeliveryKind.COMPOSING if composing else DeliveryKind.PRIVATE
        if not found:
            return Routed((), None, not_found)
        body, sent_at = _readdress(message, sender.address, found, wall)
        deliveries = tuple(
            Delivery(m.session, body, kind)
            for m in self.members.values()
            if m.session != sender.session
            and (m.key in keys or m.key == sender.key)
            and m.accepts(message.content_type)
        )
        record = None
        if self.limits.store_private and not composing:
            to = tuple(r.uri for r in found)
            record = self._record(sender, message, sent_at, wall, message_id, to)
        return Routed(deliveries, record, not_found)

    def _record(
        self,
        sender: ChatMember,
        message: CpimMessage,
        sent_at: datetime,
        wall: datetime,
        message_id: str,
        recipients: tuple[str, ...] | None = None,
    ) -> StoredMessage:
        return StoredMessage(
            room=self.room_id,
            message_id=message_id,
            sender_uri=sender.uri,
            sender_name=sender.address.display_name,
            time=sent_at.astimezone(UTC),
            content_type=message.content_type or "text/plain",
            body=message.body,
            recipients=recipients,
            received=wall,
        )


def _key_or_none(uri: str) -> str | None:
    try:
        return identity_key(uri)
    except ValueError:
        return None


def _readdress(
    message: CpimMessage,
    sender: CpimAddress,
    recipients: Sequence[CpimAddress],
    wall: datetime,
) -> tuple[bytes, datetime]:
    """The CPIM body others get: From = ``sender``, To = ``recipients`` in the place of the
    original From/To/cc, DateTime kept (added after To when absent), every other header as
    it was. Returns the body and the message's time."""
    sent_at = message.datetime or wall  # CpimError 400 for a bad DateTime
    headers: list[CpimHeader] = []
    placed = False
    address = [CpimHeader("From", str(sender)), *(CpimHeader("To", str(r)) for r in recipients)]
    has_time = any(h.name.lower() == "datetime" for h in message.headers)
    if not has_time:
        address.append(CpimHeader("DateTime", format_datetime(wall)))
    for header in message.headers:
        if header.name.lower() in ("from", "to", "cc"):
            if not placed:
                headers += address
                placed = True
            continue
        headers.append(header)
    if not placed:
        headers[:0] = address
    body = CpimMessage(tuple(headers), message.content_headers, message.body).serialize()
    return body, sent_at
