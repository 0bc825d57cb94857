"""Jingle session state (control/xmpp/jinglesession.py): pending → active → ended, fed parsed
requests, with the XEP-0166 errors for what does not fit."""

from __future__ import annotations

import itertools
from xml.etree import ElementTree as ET

import pytest

from control.xmpp.jingle import (
    Action,
    Candidate,
    Content,
    IceTransport,
    Jingle,
    JingleError,
    PayloadType,
    Reason,
    RtpDescription,
    SessionInfo,
    parse_jingle,
)
from control.xmpp.jinglebuild import build_jingle
from control.xmpp.jinglesession import (
    Accepted,
    Informed,
    Initiated,
    JingleMisuse,
    JingleSessions,
    State,
    Terminated,
    TransportInfo,
)

PEER = "romeo@montague.example/Conversations.x1Yz"
US = "juliet@sip.example"
AUDIO = Content(
    "0",
    description=RtpDescription("audio", (PayloadType(0, "PCMU", 8000),), rtcp_mux=True),
    transport=IceTransport("u", "p" * 22),
)


def _sessions(**kw: int) -> JingleSessions:
    counter = itertools.count(1)
    return JingleSessions(new_sid=lambda: f"sid{next(counter)}", **kw)


def _initiate(sid: str = "s1", **kw: object) -> Jingle:
    fields: dict[str, object] = {"initiator": PEER, "contents": (AUDIO,)} | kw
    return Jingle(Action.SESSION_INITIATE, sid, **fields)  # type: ignore[arg-type]


def _refused(sessions: JingleSessions, j: Jingle, sender: str = PEER) -> JingleError:
    with pytest.raises(JingleError) as caught:
        sessions.receive(sender, US, j)
    return caught.value


def test_incoming_call_pending_active_ended() -> None:
    sessions = _sessions()
    event = sessions.receive(PEER, US, _initiate())
    assert isinstance(event, Initiated)
    session = event.session
    assert (session.sid, session.role, session.state) == ("s1", "responder", State.PENDING)
    assert (session.initiator, session.responder) == (PEER, US)
    assert event.contents == (AUDIO,)
    ringing = session.info("ringing")
    assert ringing.action == Action.SESSION_INFO and ringing.info == SessionInfo("ringing")
    accept = session.accept([AUDIO])
    assert (accept.action, accept.initiator, accept.responder) == (
        Action.SESSION_ACCEPT,
        PEER,
        US,
    )
    assert session.state == State.ACTIVE
    hold = sessions.receive(PEER, US, Jingle(Action.SESSION_INFO, "s1", info=SessionInfo("hold")))
    assert hold == Informed("s1", SessionInfo("hold")) and session.held
    sessions.receive(PEER, US, Jingle(Action.SESSION_INFO, "s1", info=SessionInfo("unhold")))
    assert not session.held
    end = sessions.receive(
        PEER, US, Jingle(Action.SESSION_TERMINATE, "s1", reason=Reason("success"))
    )
    assert end == Terminated("s1", Reason("success"))
    assert session.state == State.ENDED and len(sessions) == 0
    # After the end the sid is unknown: item-not-found with <unknown-session/>.
    late = _refused(sessions, Jingle(Action.SESSION_INFO, "s1", info=SessionInfo("hold")))
    assert (late.condition, late.jingle) == ("item-not-found", "unknown-session")


def test_outgoing_call_accepted_then_terminated_by_us() -> None:
    sessions = _sessions()
    session, initiate = sessions.initiate(US, PEER, [AUDIO], (("BUNDLE", ("0",)),))
    assert initiate.sid == "sid1" and initiate.initiator == US
    assert initiate.groups == (("BUNDLE", ("0",)),)
    assert session.role == "initiator" and session.state == State.PENDING
    ringing = sessions.receive(
        PEER, US, Jingle(Action.SESSION_INFO, "sid1", info=SessionInfo("ringing"))
    )
    assert isinstance(ringing, Informed) and ringing.info.kind == "ringing"
    accepted = sessions.receive(
        PEER, US, Jingle(Action.SESSION_ACCEPT, "sid1", responder=PEER, contents=(AUDIO,))
    )
    assert accepted == Accepted("sid1", (AUDIO,), ())
    assert session.state == State.ACTIVE
    again = _refused(sessions, Jingle(Action.SESSION_ACCEPT, "sid1", contents=(AUDIO,)))
    assert (again.condition, again.jingle) == ("unexpected-request", "out-of-order")
    term = session.terminate("busy", "line busy")
    assert term.reason == Reason("busy", "line busy") and len(sessions) == 0
    with pytest.raises(JingleMisuse):
        session.terminate("success")


def test_sids_from_the_source_skip_ones_in_use() -> None:
    sids = iter(["dup", "dup", "fresh"])
    sessions = JingleSessions(new_sid=lambda: next(sids))
    first, _ = sessions.initiate(US, PEER, [AUDIO])
    second, _ = sessions.initiate(US, PEER, [AUDIO])
    assert (first.sid, second.sid) == ("dup", "fresh")


def test_unknown_sid_is_item_not_found_unknown_session() -> None:
    sessions = _sessions()
    sessions.receive(PEER, US, _initiate())
    error = _refused(sessions, Jingle(Action.TRANSPORT_INFO, "nope", contents=(AUDIO,)))
    assert (error.condition, error.jingle, error.type) == (
        "item-not-found",
        "unknown-session",
        "cancel",
    )
    # A sid is scoped to the pair: another JID cannot reach romeo's session.
    other = _refused(
        sessions, Jingle(Action.SESSION_TERMINATE, "s1"), sender="mallory@evil.example/x"
    )
    assert other.jingle == "unknown-session"
    # Nor can a request to another of the gateway's JIDs.
    with pytest.raises(JingleError) as caught:
        sessions.receive(PEER, "bob@sip.example", Jingle(Action.SESSION_TERMINATE, "s1"))
    assert caught.value.jingle == "unknown-session"
    assert sessions.get(PEER, "s1") is not None


def test_out_of_order_requests() -> None:
    sessions = _sessions()
    sessions.receive(PEER, US, _initiate())
    twice = _refused(sessions, _initiate())
    assert (twice.condition, twice.jingle) == ("unexpected-request", "out-of-order")
    # We are the responder: an accept from the initiator is out of order.
    accept = _refused(sessions, Jingle(Action.SESSION_ACCEPT, "s1", contents=(AUDIO,)))
    assert accept.jingle == "out-of-order"
    # Ringing is the responder's to send.
    ringing = _refused(sessions, Jingle(Action.SESSION_INFO, "s1", info=SessionInfo("ringing")))
    assert ringing.jingle == "out-of-order"


def test_bad_requests() -> None:
    sessions = _sessions()
    spoofed = _refused(sessions, _initiate(initiator="someone@else.example/r"))
    assert spoofed.condition == "bad-request"
    empty = _refused(sessions, _initiate(contents=()))
    assert empty.condition == "bad-request"
    assert len(sessions) == 0
    sessions.receive(PEER, US, _initiate())
    bare = _refused(sessions, Jingle(Action.TRANSPORT_INFO, "s1"))
    assert bare.condition == "bad-request"


def test_initiate_without_initiator_attribute_takes_the_sender() -> None:
    event = _sessions().receive(PEER, US, _initiate(initiator=None))
    assert isinstance(event, Initiated) and event.session.initiator == PEER


def test_session_info_ping_unknown_payload_and_unsupported_actions() -> None:
    sessions = _sessions()
    sessions.receive(PEER, US, _initiate())
    assert sessions.receive(PEER, US, Jingle(Action.SESSION_INFO, "s1")) is None
    unknown = _refused(sessions, Jingle(Action.SESSION_INFO, "s1", unknown_info="{urn:x}checksum"))
    assert (unknown.condition, unknown.jingle) == ("feature-not-implemented", "unsupported-info")
    add = _refused(sessions, Jingle(Action.CONTENT_ADD, "s1", contents=(AUDIO,)))
    assert (add.condition, add.jingle) == ("feature-not-implemented", None)
    # None of these ended the session.
    assert sessions.get(PEER, "s1") is not None


def test_trickled_candidates() -> None:
    sessions = _sessions()
    sessions.receive(PEER, US, _initiate())
    candidate = Candidate(1, "192.0.2.10", 41592, "c1", foundation="1", priority=1)
    trickle = Content("0", transport=IceTransport(candidates=(candidate,)))
    event = sessions.receive(PEER, US, Jingle(Action.TRANSPORT_INFO, "s1", contents=(trickle,)))
    assert event == TransportInfo("s1", (trickle,))


def test_max_sessions_is_resource_constraint() -> None:
    sessions = _sessions(max_sessions=1)
    sessions.receive(PEER, US, _initiate("a"))
    full = _refused(sessions, _initiate("b"))
    assert (full.condition, full.type) == ("resource-constraint", "wait")
    sessions.receive(PEER, US, Jingle(Action.SESSION_TERMINATE, "a"))
    assert isinstance(sessions.receive(PEER, US, _initiate("b")), Initiated)


def test_our_misuse_is_not_input() -> None:
    sessions = _sessions()
    event = sessions.receive(PEER, US, _initiate())
    assert isinstance(event, Initiated)
    session = event.session
    with pytest.raises(JingleMisuse):
        session.initiate([AUDIO])
    with pytest.raises(JingleMisuse):
        session.accept([])
    session.accept([AUDIO])
    with pytest.raises(JingleMisuse):
        session.accept([AUDIO])
    with pytest.raises(JingleMisuse):
        session.info("ringing")
    assert session.info("hold").info == SessionInfo("hold")


def test_what_the_session_sends_parses_back() -> None:
    """Every request a session builds is valid Jingle: it survives build and parse."""
    sessions = _sessions()
    session, initiate = sessions.initiate(US, PEER, [AUDIO])
    sent = [
        initiate,
        session.info("hold"),
        session.transport_info([AUDIO]),
        session.terminate("decline"),
    ]
    for j in sent:
        assert parse_jingle(ET.fromstring(ET.tostring(build_jingle(j)))) == j


def test_a_session_after_a_propose_takes_its_id() -> None:
    sessions = _sessions()
    sid = sessions.new_sid(PEER)
    session, initiate = sessions.initiate(US, PEER, [AUDIO], sid=sid)
    assert session.sid == initiate.sid == sid == "sid1"
    with pytest.raises(JingleMisuse):
        sessions.initiate(US, PEER, [AUDIO], sid=sid)
