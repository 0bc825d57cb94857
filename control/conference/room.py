"""A room: the participants reached by one conference URI (RFC 4353 §5) and everything they
share — the streams each brings, the room's chat (:class:`RoomChat`), its notices.

The room owns this state; the application only routes SIP to it (STYLE.md §5). Notices go to
the chat sessions of everyone but the participant they are about: joined, left, media added
and removed, muted and unmuted, a file shared (the nickname notice comes from the chat
itself). A session that only transfers a file (RFC 5547: an INVITE with nothing but a file
m-line, as clients push or pull) is a transfer, not a person: it is not announced as joined
or left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from control.media.engine import ParticipantId, RoomId
from control.sip.uri import SipUri
from control.streams import FileStore, MediaKind, MsrpChatStream, Stream

from .chat import ChatMember, ChatSessionId
from .notices import NoticeKind, notice_text
from .participant import MODERATOR, Participant
from .roomchat import RoomChat

__all__ = ["Room", "RoomObserver", "room_id_for", "room_uri_for"]

log = logging.getLogger("chorus.conference.room")

_MEDIA_NAMES = {MediaKind.AUDIO: "audio", MediaKind.CHAT: "chat"}


def _wrapped_types(stream: MsrpChatStream) -> tuple[str, ...]:
    """What the participant takes inside CPIM: its a=accept-wrapped-types, else its
    accept-types but CPIM itself (RFC 4975 §8.6), else anything (a lenient default)."""
    offered = stream.offered
    if offered.accept_wrapped_types:
        return offered.accept_wrapped_types
    plain = tuple(t for t in offered.accept_types if t.strip().lower() != "message/cpim")
    return plain or ("*",)


class RoomObserver(Protocol):
    """Told when a room starts and ends, e.g. so a cluster edge can pin the room's URI to this
    node while it lives (the Kamailio dispatcher; draining is the observer's business)."""

    def room_opened(self, room: RoomId) -> None: ...

    def room_closed(self, room: RoomId) -> None: ...


def room_id_for(uri: SipUri) -> RoomId:
    """``user@host`` of the Request-URI, case-folded: one room per conference URI."""
    user = (uri.unescaped_user() or "").lower()
    return RoomId(f"{user}@{uri.host.lower()}" if user else uri.host.lower())


def room_uri_for(room_id: RoomId) -> str:
    """The room's own URI (CPIM ``To`` of public messages, ``From`` of notices)."""
    return f"sip:{room_id}"


def _fields(room: Room, participant: Participant) -> dict[str, str | None]:
    """What a structured log line (``[server] log_format = "json"``) carries as fields. A
    log line never raises: a session without a dialog (a stand-in) has no Call-ID."""
    dialog = getattr(participant.session, "dialog", None)
    return {"room": room.id, "call_id": getattr(dialog, "call_id", None)}


class Room:
    def __init__(
        self,
        room_id: RoomId,
        uri: SipUri,
        *,
        max_participants: int,
        chat: RoomChat | None = None,
        files: FileStore | None = None,
    ) -> None:
        self.id = room_id
        self.uri = uri
        self.max_participants = max_participants
        self.participants: dict[ParticipantId, Participant] = {}
        self.created_at = time.time()
        self.chat = chat
        self.files = files  # the room's file store (control/files/rooms.py), while it lives
        # Who shares a screen, and its signed image URL when the web server is on (kept for
        # conference-info's agp-conf:screen_image_url).
        self.screens: dict[ParticipantId, str | None] = {}
        # Moderation (control/conference/moderation.py changes these; conference-info shows
        # them): a locked room refuses new joins 403; a PIN holds a joiner out of the mix and
        # chat until entered (``?pin=`` or DTMF); private messages may be disabled.
        self.locked = False
        self.pin: str | None = None
        self.private_messages = True
        # Told of every change conference-info shows (control/conference/infosubs.py marks
        # the room's subscriptions due; with none it does nothing).
        self.on_change: Callable[[], None] | None = None
        # Others told of the same changes: the MUC gateway's occupant presences
        # (control/xmpp/mucgw.py), which follow this room's participants.
        self.listeners: list[Callable[[], None]] = []
        self.subject: str | None = None  # set from MUC (XEP-0045 §8.1), sent to MUC joiners

    def changed(self) -> None:
        """Participants, streams, nicknames, mute, files, screens or lock changed."""
        if self.on_change is not None:
            self.on_change()
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:
                log.exception("a listener of room %s failed", self.id)

    def is_moderator(self, participant: Participant) -> bool:
        """May this participant moderate (mute, kick, lock, set the PIN; REFER's BYE)?"""
        return participant.role == MODERATOR

    @property
    def moderators(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.role == MODERATOR]

    @property
    def chat_only(self) -> list[ChatMember]:
        """Chat members with no SIP session in the room: XMPP occupants through MUC
        (control/xmpp/mucgw.py). Conference-info and the admin API show them; the limit
        counts them."""
        if self.chat is None:
            return []
        members = self.chat.core.members.values()
        return [m for m in members if m.participant not in self.participants]

    @property
    def full(self) -> bool:
        """``max_participants`` counts SIP participants and chat-only identities (one per
        XMPP user, however many resources), as a MUC join does (mucgw seats)."""
        chat_only = len({m.key for m in self.chat_only})
        return len(self.participants) + chat_only >= self.max_participants

    @property
    def empty(self) -> bool:
        return not self.participants

    def add(self, participant: Participant) -> None:
        """A participant whose answer was sent: joined, with its first streams."""
        self.participants[participant.id] = participant
        participant.transfer_only = participant.kinds == {MediaKind.FILE}
        log.info(
            "%s joined %s with %s (%d in room)",
            participant.identity.uri,
            self.id,
            ", ".join(sorted(kind.value for kind in participant.kinds)) or "nothing",
            len(self),
            extra=_fields(self, participant),
        )
        if not participant.awaiting_pin:
            self.admitted(participant)
        self.changed()

    def admitted(self, participant: Participant) -> None:
        """In the room for everyone: announced, its chat attached (a participant awaiting
        the PIN is neither until moderation lets it in)."""
        if not participant.transfer_only:
            self._notice(NoticeKind.JOINED, participant)
        self.streams_started(participant, participant.streams.values(), announce=False)

    def remove(self, participant_id: ParticipantId) -> Participant | None:
        participant = self.participants.pop(participant_id, None)
        if participant is not None:
            self.streams_stopped(participant, participant.streams.values(), announce=False)
            log.info(
                "%s left %s (%d in room)",
                participant.identity.uri,
                self.id,
                len(self),
                extra=_fields(self, participant),
            )
            if not participant.transfer_only and not participant.awaiting_pin:
                self._notice(NoticeKind.LEFT, participant)
            self.changed()
        return participant

    # --- streams ---------------------------------------------------------------------------

    def streams_started(
        self, participant: Participant, streams: Iterable[Stream], *, announce: bool = True
    ) -> None:
        """Streams a (re-)offer created: chat joins the room's chat (history first)."""
        if participant.awaiting_pin:
            return  # attached when it is let in (control/conference/moderation.py)
        for stream in streams:
            if isinstance(stream, MsrpChatStream) and self.chat is not None:
                member = ChatMember(
                    ChatSessionId(stream.channel.session_id),
                    participant.id,
                    participant.uri,
                    participant.identity.display_name,
                    _wrapped_types(stream),
                )
                self.chat.attach(member, stream.channel)
            if announce and stream.kind is not MediaKind.FILE:  # the file notice says it
                self._notice(NoticeKind.MEDIA_ADDED, participant, _MEDIA_NAMES.get(stream.kind))
        self.changed()

    def streams_stopped(
        self, participant: Participant, streams: Iterable[Stream], *, announce: bool = True
    ) -> None:
        """Streams a re-offer removed or replaced, or the participant's end."""
        for stream in streams:
            if isinstance(stream, MsrpChatStream) and self.chat is not None:
                self.chat.detach(ChatSessionId(stream.channel.session_id))
            if announce and stream.kind is not MediaKind.FILE:
                self._notice(NoticeKind.MEDIA_REMOVED, participant, _MEDIA_NAMES.get(stream.kind))
        self.changed()

    def chat_owner(self, session: ChatSessionId) -> tuple[Participant, int] | None:
        """The participant and m-line index holding a chat session."""
        for participant in self.participants.values():
            for index, stream in participant.streams.items():
                if isinstance(stream, MsrpChatStream) and stream.channel.session_id == session:
                    return participant, index
        return None

    def set_muted(self, participant: Participant, muted: bool, *, by_operator: bool) -> None:
        if participant.muted == muted:
            return
        participant.muted = muted
        kind = NoticeKind.MUTED if muted else NoticeKind.UNMUTED
        # Everyone hears of it, the participant too: an operator may have done it.
        self._notice(kind, participant, "operator" if by_operator else None, exclude=False)

    def announce(
        self,
        kind: NoticeKind,
        participant: Participant | None,
        detail: str | None = None,
        *,
        who: str | None = None,
        details: Sequence[tuple[str, str]] = (),
        exclude: bool = True,
    ) -> None:
        """A notice about ``participant`` (or ``who``, someone no longer in the room) with
        its facts as ``details`` headers (control/conference/notices.py)."""
        self.changed()  # a notice is news for conference-info too (mute, file, screen, lock)
        if self.chat is None:
            return
        name = participant.name if participant is not None else who or "someone"
        text = notice_text(kind, name, detail)
        excluded = participant.id if exclude and participant is not None else None
        self.chat.notice(kind, text, exclude_participant=excluded, details=details)

    def _notice(
        self,
        kind: NoticeKind,
        participant: Participant,
        detail: str | None = None,
        *,
        exclude: bool = True,
    ) -> None:
        self.announce(kind, participant, detail, exclude=exclude)

    def close(self) -> None:
        if self.chat is not None:
            self.chat.close()

    def __len__(self) -> int:
        return len(self.participants)
