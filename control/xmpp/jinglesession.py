"""Jingle sessions (XEP-0166 §6), sans-IO: the state of each session, fed parsed ``<jingle/>``
requests, returning one event per request or raising the :class:`JingleError` to answer.

A session is ``pending`` from its session-initiate until the responder's session-accept,
then ``active``, then ``ended`` after a session-terminate from either side (XEP-0166 §6.1).
:class:`JingleSessions` keeps them by (peer JID, sid), as XEP-0166 §7.1 scopes a sid to the
pair, and answers what does not fit a session:

- a request for a sid it does not know (never opened, or already ended) is ``item-not-found``
  with ``<unknown-session/>`` (XEP-0166 §8);
- a request the session's state does not allow (a second session-initiate for a sid, an
  accept from the initiator or of an active session, ringing from the initiator) is
  ``unexpected-request`` with ``<out-of-order/>``;
- a session-initiate whose ``initiator`` is not the sender, or one without contents, an
  accept or transport-info without contents, is ``bad-request``;
- a session-info payload we do not know is ``feature-not-implemented`` with
  ``<unsupported-info/>`` (XEP-0166 §7.2.10); an empty one is a ping and is only acked;
- content-add/modify/remove/accept/reject, transport-replace/accept/reject, description-info
  and security-info are ``feature-not-implemented``: Chorus bridges one audio content and
  does not renegotiate it (a peer then keeps or ends the session).

Every request that raises nothing is acked with an empty iq result by the asyncio layer. Our
own requests (accept, ringing, hold, transport-info, terminate) come from the session's
methods, which check the state too: asking for an impossible one is :class:`JingleMisuse`, a
bug of ours, not input. Sids for sessions we initiate come from an injected source so tests
can predict them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from control.xmpp.jingle import (
    Action,
    Content,
    Jingle,
    JingleError,
    Reason,
    SessionInfo,
)

__all__ = [
    "Accepted",
    "Event",
    "Informed",
    "Initiated",
    "JingleMisuse",
    "JingleSession",
    "JingleSessions",
    "State",
    "Terminated",
    "TransportInfo",
]

Groups = tuple[tuple[str, tuple[str, ...]], ...]
_UNSUPPORTED = frozenset(
    {
        Action.CONTENT_ACCEPT,
        Action.CONTENT_ADD,
        Action.CONTENT_MODIFY,
        Action.CONTENT_REJECT,
        Action.CONTENT_REMOVE,
        Action.DESCRIPTION_INFO,
        Action.SECURITY_INFO,
        Action.TRANSPORT_ACCEPT,
        Action.TRANSPORT_REJECT,
        Action.TRANSPORT_REPLACE,
    }
)


class State(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    ENDED = "ended"


class JingleMisuse(Exception):
    """We asked a session for something its state forbids: a bug, never a peer's fault."""


@dataclass(frozen=True, slots=True)
class Initiated:
    """A peer's session-initiate opened ``session`` (pending, we are the responder)."""

    session: JingleSession
    contents: tuple[Content, ...]
    groups: Groups


@dataclass(frozen=True, slots=True)
class Accepted:
    """The responder accepted our session: it is active."""

    sid: str
    contents: tuple[Content, ...]
    groups: Groups


@dataclass(frozen=True, slots=True)
class TransportInfo:
    """More candidates (trickle ICE) or a fingerprint, per content."""

    sid: str
    contents: tuple[Content, ...]


@dataclass(frozen=True, slots=True)
class Informed:
    """A XEP-0167 session-info: ringing, hold, unhold, active, mute, unmute."""

    sid: str
    info: SessionInfo


@dataclass(frozen=True, slots=True)
class Terminated:
    """The peer ended the session; ``reason`` None when it gave none."""

    sid: str
    reason: Reason | None


Event = Initiated | Accepted | TransportInfo | Informed | Terminated


def _need_contents(j: Jingle) -> None:
    if not j.contents:
        raise JingleError("bad-request", f"{j.action.value} without a <content/>")


class JingleSession:
    """One session between ``local`` (our JID) and ``peer``; ``role`` is ours."""

    def __init__(self, sid: str, *, local: str, peer: str, role: str) -> None:
        if role not in ("initiator", "responder"):
            raise ValueError(f"role {role!r}")
        self.sid = sid
        self.local = local
        self.peer = peer
        self.role = role
        self.state = State.PENDING
        self.held = False  # the peer put us on hold (XEP-0167 §7.1)

    def __repr__(self) -> str:
        return f"<JingleSession {self.sid} {self.role} {self.peer} {self.state}>"

    @property
    def initiator(self) -> str:
        return self.local if self.role == "initiator" else self.peer

    @property
    def responder(self) -> str:
        return self.peer if self.role == "initiator" else self.local

    # ---------------------------------------------------------------- from the peer

    def receive(self, j: Jingle) -> Event | None:
        """The event for the peer's request ``j`` of this session, None for a ping; raises
        :class:`JingleError` for one to refuse (module doc)."""
        if self.state == State.ENDED:
            raise JingleError.unknown_session(self.sid)
        match j.action:
            case Action.SESSION_INITIATE:
                raise JingleError.out_of_order(f"session {self.sid!r} is already initiated")
            case Action.SESSION_ACCEPT:
                if self.role != "initiator" or self.state != State.PENDING:
                    raise JingleError.out_of_order(f"session-accept of a {self.state} session")
                _need_contents(j)
                self.state = State.ACTIVE
                return Accepted(self.sid, j.contents, j.groups)
            case Action.SESSION_TERMINATE:
                self.state = State.ENDED
                return Terminated(self.sid, j.reason)
            case Action.TRANSPORT_INFO:
                _need_contents(j)
                return TransportInfo(self.sid, j.contents)
            case Action.SESSION_INFO:
                return self._info(j)
        if j.action in _UNSUPPORTED:
            raise JingleError("feature-not-implemented", f"{j.action.value} is not supported")
        raise JingleError("bad-request", f"unexpected {j.action.value}")  # pragma: no cover

    def _info(self, j: Jingle) -> Informed | None:
        if j.unknown_info is not None:
            raise JingleError(
                "feature-not-implemented",
                f"session-info {j.unknown_info[:80]}",
                jingle="unsupported-info",
            )
        if j.info is None:
            return None  # XEP-0166 §7.2.10: an empty session-info is a ping
        if j.info.kind == "ringing" and (self.role != "initiator" or self.state != State.PENDING):
            raise JingleError.out_of_order("ringing is the responder's, before it accepts")
        if j.info.kind in ("hold", "unhold"):
            self.held = j.info.kind == "hold"
        return Informed(self.sid, j.info)

    # ----------------------------------------------------------------- from us

    def initiate(self, contents: Sequence[Content], groups: Groups = ()) -> Jingle:
        if self.role != "initiator" or self.state != State.PENDING:
            raise JingleMisuse(f"initiate {self!r}")
        return Jingle(
            Action.SESSION_INITIATE,
            self.sid,
            initiator=self.local,
            contents=tuple(contents),
            groups=groups,
        )

    def accept(self, contents: Sequence[Content], groups: Groups = ()) -> Jingle:
        if self.role != "responder" or self.state != State.PENDING:
            raise JingleMisuse(f"accept {self!r}")
        if not contents:
            raise JingleMisuse("session-accept without contents")
        self.state = State.ACTIVE
        return Jingle(
            Action.SESSION_ACCEPT,
            self.sid,
            initiator=self.peer,
            responder=self.local,
            contents=tuple(contents),
            groups=groups,
        )

    def info(self, kind: str, *, creator: str | None = None, name: str | None = None) -> Jingle:
        """A XEP-0167 session-info of ours: ringing (responder, pending), hold, unhold …"""
        if self.state == State.ENDED:
            raise JingleMisuse(f"{kind} on {self!r}")
        if kind == "ringing" and (self.role != "responder" or self.state != State.PENDING):
            raise JingleMisuse(f"ringing on {self!r}")
        return Jingle(Action.SESSION_INFO, self.sid, info=SessionInfo(kind, creator, name))

    def transport_info(self, contents: Sequence[Content]) -> Jingle:
        if self.state == State.ENDED or not contents:
            raise JingleMisuse(f"transport-info on {self!r}")
        return Jingle(Action.TRANSPORT_INFO, self.sid, contents=tuple(contents))

    def terminate(self, condition: str, text: str | None = None) -> Jingle:
        if self.state == State.ENDED:
            raise JingleMisuse(f"terminate {self!r}")
        self.state = State.ENDED
        return Jingle(Action.SESSION_TERMINATE, self.sid, reason=Reason(condition, text))


class JingleSessions:
    """The sessions of the gateway, by (peer JID, sid). ``max_sessions`` bounds what peers
    can open (one audio call each is the expected use); past it a session-initiate is
    ``resource-constraint``."""

    def __init__(self, *, new_sid: Callable[[], str], max_sessions: int = 1024) -> None:
        self._new_sid = new_sid
        self._max = max_sessions
        self._sessions: dict[tuple[str, str], JingleSession] = {}

    def __len__(self) -> int:
        self._prune()
        return len(self._sessions)

    def __iter__(self) -> Iterator[JingleSession]:
        self._prune()
        return iter(list(self._sessions.values()))

    def _prune(self) -> None:
        for key in [k for k, s in self._sessions.items() if s.state == State.ENDED]:
            del self._sessions[key]

    def get(self, peer: str, sid: str) -> JingleSession | None:
        session = self._sessions.get((peer, sid))
        return session if session is not None and session.state != State.ENDED else None

    def receive(self, sender: str, recipient: str, j: Jingle) -> Event | None:
        """A Jingle request from ``sender`` (the iq's full ``from``) to ``recipient`` (our
        JID it was sent to): the event, None for a ping, or :class:`JingleError`."""
        self._prune()
        if j.action == Action.SESSION_INITIATE:
            return self._initiated(sender, recipient, j)
        session = self.get(sender, j.sid)
        if session is None or session.local != recipient:
            # the sid is the pair's (XEP-0166 §7.1): not ours when sent to another of our JIDs
            raise JingleError.unknown_session(j.sid)
        event = session.receive(j)
        self._prune()
        return event

    def _initiated(self, sender: str, recipient: str, j: Jingle) -> Initiated:
        if (sender, j.sid) in self._sessions:
            raise JingleError.out_of_order(f"session {j.sid[:64]!r} is already initiated")
        if j.initiator is not None and j.initiator != sender:
            raise JingleError("bad-request", "initiator is not the sender (XEP-0166 §7.1)")
        _need_contents(j)
        if len(self._sessions) >= self._max:
            raise JingleError("resource-constraint", f"{self._max} Jingle sessions open")
        session = JingleSession(j.sid, local=recipient, peer=sender, role="responder")
        self._sessions[(sender, j.sid)] = session
        return Initiated(session, j.contents, j.groups)

    def new_sid(self, peer: str) -> str:
        """A sid no session with ``peer`` uses: for a XEP-0353 propose, whose id becomes the
        sid of the session-initiate that follows the peer's proceed."""
        sid = self._new_sid()
        while (peer, sid) in self._sessions:
            sid = self._new_sid()
        return sid

    def initiate(
        self,
        local: str,
        peer: str,
        contents: Sequence[Content],
        groups: Groups = (),
        *,
        sid: str | None = None,
    ) -> tuple[JingleSession, Jingle]:
        """A new session of ours to ``peer`` and the session-initiate to send; ``sid`` is a
        propose's id when the session follows one (else a fresh one)."""
        if sid is None:
            sid = self.new_sid(peer)
        elif (peer, sid) in self._sessions:
            raise JingleMisuse(f"sid {sid!r} is in use with {peer}")
        session = JingleSession(sid, local=local, peer=peer, role="initiator")
        self._sessions[(peer, sid)] = session
        return session, session.initiate(contents, groups)
