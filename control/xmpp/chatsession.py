"""One-to-one chat sessions between an XMPP user and a SIP user (RFC 7573), sans-IO.

XMPP has no chat session to set up: a "chat" is messages of ``type="chat"`` between two
addresses. SIP has: an INVITE with an MSRP chat m-line (RFC 4975), then MSRP SENDs, then BYE.
The gateway keeps one :class:`ChatSession` per pair (the XMPP user's bare JID, the SIP user
as a JID under the component), and that pair's messages go through it, both ways:

- **SIP → XMPP** (RFC 7573): a SIP user's INVITE with MSRP chat to an XMPP address is
  answered at once (XMPP has nothing to wait for); each MSRP message becomes a chat message
  to the XMPP user, and the XMPP user's chat messages to that SIP user go over the session's
  MSRP, not as pager-mode MESSAGEs.
- **XMPP → SIP** (RFC 7573): with ``[xmpp] chat_sessions`` on, an XMPP user's first chat
  message to a SIP user starts an INVITE with MSRP chat instead of a MESSAGE; what the XMPP
  user writes meanwhile waits in the session (at most ``max_queued`` messages) and goes once
  the MSRP session is up, or is answered with the INVITE's failure as an error stanza each
  (nothing silently lost).
- **The end** (RFC 7573): a SIP BYE, the XMPP chat state ``gone`` (XEP-0085),
  the XMPP user's unavailable presence, or ``idle`` seconds without a message either way
  (``[xmpp] chat_session_idle``). Ending toward the side that did not leave is the glue's
  (control/xmpp/chatgw.py): a BYE toward SIP, ``gone`` toward XMPP.

Messages to XMPP go to the full JID the XMPP user last wrote from (RFC 6121 §5.1: lock in on
the resource that answers), the bare JID until then. :class:`ChatSessions` is the table with
its limit (``[xmpp] max_chat_sessions``) and the one deadline the glue arms a timer for.
:func:`msrp_content` picks how a chat message travels over MSRP, as the peer's
``a=accept-types`` allow.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from control.msrp.cpim import CPIM_CONTENT_TYPE, CpimAddress, CpimMessage
from control.xmpp.addressing import Jid
from control.xmpp.errors import StanzaRefused
from control.xmpp.messages import Chat, condition_for_status, sip_from_chat

__all__ = [
    "ChatSession",
    "ChatSessions",
    "Origin",
    "Queued",
    "Routed",
    "SessionKey",
    "SessionState",
    "SessionsFull",
    "msrp_content",
]


class Origin(enum.Enum):
    SIP = "sip"  # a SIP user's INVITE
    XMPP = "xmpp"  # an XMPP user's chat message, [xmpp] chat_sessions on


class SessionState(enum.Enum):
    STARTING = "starting"  # our INVITE is out, or the MSRP session not connected yet
    ACTIVE = "active"
    ENDED = "ended"


class Routed(enum.Enum):
    """What becomes of an XMPP message given to a session."""

    SEND = "send"  # over MSRP now
    QUEUED = "queued"  # once the session is up
    DROPPED = "dropped"  # a chat state alone while starting: nothing to say yet


@dataclass(frozen=True, slots=True)
class SessionKey:
    """The pair: the XMPP user's bare JID and the SIP user's JID under the component."""

    xmpp: str
    sip: str

    @classmethod
    def of(cls, xmpp_user: Jid, sip_user: Jid) -> SessionKey:
        return cls(xmpp_user.bare.lower(), sip_user.bare.lower())


@dataclass(frozen=True, slots=True)
class Queued:
    """An XMPP message waiting for the session: its stanza id (for an error) and content."""

    id: str
    chat: Chat
    receipt: bool = False  # XEP-0184: the sender asked for a receipt


class SessionsFull(Exception):
    """``max_chat_sessions`` are open: SIP 486, XMPP ``resource-constraint``."""


@dataclass(slots=True)
class ChatSession:
    """One pair's session: state, where XMPP messages go, the queue, the idle clock."""

    key: SessionKey
    origin: Origin
    xmpp_peer: Jid  # where messages to the XMPP user go (the full JID once it wrote)
    sip_user: Jid  # the SIP user as a JID under the component: the from of what we send
    idle: float
    last_activity: float
    max_queued: int = 50
    state: SessionState = SessionState.STARTING
    end_reason: str | None = None
    queue: list[Queued] = field(default_factory=list)

    def touch(self, now: float) -> None:
        self.last_activity = now

    def from_xmpp(
        self, sender: Jid, id: str, chat: Chat, *, now: float, receipt: bool = False
    ) -> Routed:
        """An XMPP message of this pair: sent now, queued, or dropped (a lone chat state
        before the session is up). :class:`StanzaRefused` when the session is over or its
        queue full (``resource-constraint``)."""
        if self.state is SessionState.ENDED:
            raise StanzaRefused("recipient-unavailable", "the chat session has ended")
        self.touch(now)
        if sender.resource:
            self.xmpp_peer = sender  # RFC 6121 §5.1: answer the resource that wrote
        if self.state is SessionState.ACTIVE:
            return Routed.SEND
        if chat.body is None:
            return Routed.DROPPED
        if len(self.queue) >= self.max_queued:
            raise StanzaRefused("resource-constraint", "too many messages while the SIP side rings")
        self.queue.append(Queued(id, chat, receipt))
        return Routed.QUEUED

    def from_sip(self, *, now: float) -> Jid:
        """A SIP user's message of this session: where it goes on the XMPP side."""
        self.touch(now)
        return self.xmpp_peer

    def established(self, *, now: float) -> list[Queued]:
        """The MSRP session is up: what waited, to send in order."""
        if self.state is SessionState.ENDED:
            return []
        self.state = SessionState.ACTIVE
        self.touch(now)
        queued, self.queue = self.queue, []
        return queued

    def failed(self, status: int, reason: str) -> list[tuple[Queued, StanzaRefused]]:
        """The INVITE (or the MSRP connection) failed with SIP ``status``: each waiting
        message is answered with the mapped condition (RFC 7572 §5.2); the caller then ends
        the session (:meth:`end`)."""
        refusal = StanzaRefused(condition_for_status(status), f"SIP answered {status} {reason}")
        queued, self.queue = self.queue, []
        return [(item, refusal) for item in queued]

    def end(self, reason: str) -> bool:
        """End the session; True the first time (the glue then tells the other side)."""
        if self.state is SessionState.ENDED:
            return False
        self.state = SessionState.ENDED
        self.end_reason = reason
        return True

    @property
    def deadline(self) -> float | None:
        """When the session ends for idleness, unless a message comes first."""
        if self.state is SessionState.ENDED:
            return None
        return self.last_activity + self.idle

    def idle_expired(self, now: float) -> bool:
        deadline = self.deadline
        return deadline is not None and now >= deadline


class ChatSessions:
    """The open sessions by pair, at most ``limit`` of them."""

    def __init__(self, *, limit: int, idle: float, max_queued: int = 50) -> None:
        self.limit = limit
        self.idle = idle
        self.max_queued = max_queued
        self._sessions: dict[SessionKey, ChatSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def find(self, key: SessionKey) -> ChatSession | None:
        return self._sessions.get(key)

    def open(
        self, key: SessionKey, origin: Origin, *, xmpp_peer: Jid, sip_user: Jid, now: float
    ) -> ChatSession:
        """A new session for ``key`` (the caller ended any previous one first)."""
        if key in self._sessions:
            raise ValueError(f"a session for {key} is open")
        if len(self._sessions) >= self.limit:
            raise SessionsFull(f"{self.limit} chat sessions open")
        session = ChatSession(
            key,
            origin,
            xmpp_peer=xmpp_peer,
            sip_user=sip_user,
            idle=self.idle,
            last_activity=now,
            max_queued=self.max_queued,
        )
        self._sessions[key] = session
        return session

    def discard(self, session: ChatSession) -> None:
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]

    def of_xmpp_user(self, sender: Jid) -> list[ChatSession]:
        """The sessions an unavailable presence from ``sender`` ends: those with its bare JID
        that talk to that very resource, or to the bare JID (no resource locked in yet), or
        all of them when the presence is from the bare JID."""
        bare = sender.bare.lower()
        return [
            session
            for session in self._sessions.values()
            if session.key.xmpp == bare
            and (
                sender.resource is None
                or session.xmpp_peer.resource is None
                or session.xmpp_peer == sender
            )
        ]

    def next_deadline(self) -> float | None:
        deadlines = [s.deadline for s in self._sessions.values() if s.deadline is not None]
        return min(deadlines) if deadlines else None

    def expired(self, now: float) -> list[ChatSession]:
        return [s for s in self._sessions.values() if s.idle_expired(now)]

    def all(self) -> list[ChatSession]:
        return list(self._sessions.values())


def _accepts(types: Sequence[str], content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    major = mime.split("/", 1)[0]
    for accepted in types:
        accepted = accepted.lower()
        if accepted in ("*", mime, f"{major}/*"):
            return True
    return False


def msrp_content(
    chat: Chat,
    *,
    accept_types: Sequence[str],
    accept_wrapped_types: Sequence[str],
    sender: CpimAddress,
    recipient: CpimAddress,
    now: datetime,
) -> tuple[str, bytes] | None:
    """How ``chat`` goes over MSRP to a peer that takes ``accept_types`` (and, inside CPIM,
    ``accept_wrapped_types``): as is when the peer takes its type, else wrapped in CPIM with
    From, To and DateTime (RFC 3862, RFC 4975 §8.6). None when the chat message carries
    nothing for SIP; :class:`StanzaRefused` ``not-acceptable`` when the peer takes neither."""
    content = sip_from_chat(chat)
    if content is None:
        return None
    content_type, body = content
    if _accepts(accept_types, content_type):
        return content_type, body
    if _accepts(accept_types, CPIM_CONTENT_TYPE) and _accepts(
        accept_wrapped_types or ("*",), content_type
    ):
        wrapped = CpimMessage.build(
            content_type=content_type,
            body=body,
            sender=sender,
            recipients=(recipient,),
            datetime=now,
        )
        return CPIM_CONTENT_TYPE, wrapped.serialize()
    raise StanzaRefused("not-acceptable", f"the SIP user's chat does not take {content_type}")
