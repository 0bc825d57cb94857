"""Jingle audio between two XMPP users on a real Prosody, each phone an aiortc stack driven by
Chorus' Jingle layers (tests/peers/jinglepeer.py): the session-initiate built from aiortc's
offer, the accept from its answer, ringing, hold, hang-up, the XEP-0166 errors and XEP-0353
message initiation (propose to a bare JID, proceed or reject), all through Prosody's
client-to-client routing; each hears the other's tone (FFT).

This checks the Jingle ↔ SDP mapping against an independent WebRTC stack in both directions
(aiortc reads SDP that control/xmpp/jinglesdp.py wrote from Jingle that it wrote from aiortc's
SDP), before the gateway bridges such a call to SIP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from xml.etree import ElementTree as ET

import pytest

from control.media.tone import dominant_frequencies
from control.xmpp.jingle import Action, IceTransport, Jingle, Reason, SessionInfo
from control.xmpp.jinglebuild import build_jingle
from control.xmpp.jinglemessage import JingleMessage
from control.xmpp.jinglesession import Accepted, Informed, Initiated, Terminated
from tests.peers.jinglepeer import RATE, JinglePeer, iq_error, send_raw
from tests.peers.prosody import ProsodyProcess, client_ssl_context
from tests.peers.wait import wait_until

pytestmark = pytest.mark.peer("prosody", "aiortc")

ALICE_HZ, BOB_HZ = 600.0, 1000.0


@pytest.fixture
async def phones() -> AsyncIterator[tuple[JinglePeer, JinglePeer]]:
    prosody = ProsodyProcess(users={"alice": "alice-pw", "bob": "bob-pw"}).start()
    domain = prosody.xmpp_domain
    alice = JinglePeer(
        f"alice@{domain}/phone", "alice-pw", freq=ALICE_HZ, ssl_context=client_ssl_context()
    )
    bob = JinglePeer(f"bob@{domain}/phone", "bob-pw", freq=BOB_HZ, ssl_context=client_ssl_context())
    try:
        await alice.connect("127.0.0.1", prosody.c2s_port)
        await bob.connect("127.0.0.1", prosody.c2s_port)
        yield alice, bob
    finally:
        await alice.close()
        await bob.close()
        prosody.stop()
        prosody.cleanup()


def _tone(peer: JinglePeer) -> float:
    """The strongest frequency of the last second heard (the first may hold set-up noise)."""
    pcm = peer.heard()[-RATE:]
    (freq,) = dominant_frequencies(pcm, RATE, 1)
    return freq


async def _call(alice: JinglePeer, bob: JinglePeer) -> Initiated:
    await alice.call(bob.full_jid)
    initiated = await bob.next_event(Initiated)
    assert initiated.session.peer == alice.full_jid
    (content,) = initiated.contents
    assert isinstance(content.transport, IceTransport)
    assert content.transport.fingerprint is not None  # DTLS-SRTP (XEP-0320)
    assert {c.ip for c in content.transport.candidates} == {"127.0.0.1"}  # loopback only
    await bob.ring()
    ringing = await alice.next_event(Informed)
    assert ringing.info == SessionInfo("ringing")
    await bob.answer(initiated)
    accepted = await alice.next_event(Accepted)
    assert accepted.sid == initiated.session.sid
    assert alice.session is not None and alice.session.state == "active"
    return initiated


async def _both_hear(alice: JinglePeer, bob: JinglePeer) -> None:
    assert await wait_until(
        lambda: alice.heard_seconds() >= 2.0 and bob.heard_seconds() >= 2.0, timeout=60
    ), (alice.heard_seconds(), bob.heard_seconds())
    assert abs(_tone(alice) - BOB_HZ) < 15, _tone(alice)
    assert abs(_tone(bob) - ALICE_HZ) < 15, _tone(bob)


async def test_call_ring_answer_hear_hold_hang_up(phones: tuple[JinglePeer, JinglePeer]) -> None:
    alice, bob = phones
    initiated = await _call(alice, bob)
    await _both_hear(alice, bob)
    assert alice.negotiated_codec() == bob.negotiated_codec() == "opus"
    await alice.hold()
    held = await bob.next_event(Informed)
    assert held.info == SessionInfo("hold") and initiated.session.held
    await alice.hold("unhold")
    await bob.next_event(Informed)
    assert not initiated.session.held
    await alice.hangup()
    ended = await bob.next_event(Terminated)
    assert ended.reason is not None and ended.reason.condition == "success"
    assert alice.errors == [] and bob.errors == []
    # The session is gone on both sides: a late request is unknown-session.
    late = build_jingle(Jingle(Action.SESSION_INFO, initiated.session.sid))
    with pytest.raises(Exception) as caught:
        await send_raw(bob, alice.full_jid, late)
    assert iq_error(caught.value.iq.xml) == ("item-not-found", "unknown-session")


@pytest.mark.parametrize("codec", ["G722", "PCMU"])
async def test_each_codec_carries_the_tones(
    phones: tuple[JinglePeer, JinglePeer], codec: str
) -> None:
    alice, bob = phones
    alice.codecs = (codec,)
    await _call(alice, bob)
    await _both_hear(alice, bob)
    assert alice.negotiated_codec() == bob.negotiated_codec() == codec
    await bob.hangup("success")
    await alice.next_event(Terminated)


async def test_requests_out_of_order_and_malformed_are_refused(
    phones: tuple[JinglePeer, JinglePeer],
) -> None:
    alice, bob = phones
    initiated = await _call(alice, bob)
    sid = initiated.session.sid
    # A second session-accept of an active session: out-of-order.
    again = build_jingle(
        Jingle(Action.SESSION_ACCEPT, sid, contents=initiated.contents, responder=bob.full_jid)
    )
    with pytest.raises(Exception) as caught:
        await send_raw(bob, alice.full_jid, again)
    assert iq_error(caught.value.iq.xml) == ("unexpected-request", "out-of-order")
    # A jingle element without a sid: bad-request.
    bad = ET.fromstring("<jingle xmlns='urn:xmpp:jingle:1' action='session-info'/>")
    with pytest.raises(Exception) as caught:
        await send_raw(bob, alice.full_jid, bad)
    assert iq_error(caught.value.iq.xml) == ("bad-request", None)
    # None of it ended the call.
    assert alice.session is not None and alice.session.state == "active"
    await alice.hangup()
    await bob.next_event(Terminated)


def _bare(jid: str) -> str:
    return jid.split("/", 1)[0]


async def test_message_initiation_to_a_bare_jid(phones: tuple[JinglePeer, JinglePeer]) -> None:
    """XEP-0353 as Conversations and Dino call: propose to the bare JID, ringing, proceed from
    the device that takes it, then the session-initiate (sid = the propose's id) to it."""
    alice, bob = phones
    sid = alice.propose(_bare(bob.full_jid))
    caller, propose = await bob.next_message("propose")
    assert caller == alice.full_jid and propose.id == sid and propose.audio
    bob.send_message(caller, JingleMessage("ringing", sid))
    await alice.next_message("ringing")
    bob.send_message(caller, JingleMessage("proceed", sid))
    initiated = await bob.next_event(Initiated)
    assert initiated.session.sid == sid and initiated.session.peer == alice.full_jid
    await bob.answer(initiated)
    await alice.next_event(Accepted)
    await _both_hear(alice, bob)
    await bob.hangup()
    await alice.next_event(Terminated)
    bob.send_message(caller, JingleMessage("finish", sid, reason=Reason("success")))
    _, finish = await alice.next_message("finish")
    assert finish.reason == Reason("success")


async def test_a_rejected_proposal_opens_no_session(
    phones: tuple[JinglePeer, JinglePeer],
) -> None:
    alice, bob = phones
    sid = alice.propose(_bare(bob.full_jid))
    caller, _ = await bob.next_message("propose")
    bob.send_message(caller, JingleMessage("reject", sid, reason=Reason("busy", "SIP 486")))
    _, reject = await alice.next_message("reject")
    assert reject.id == sid and reject.reason == Reason("busy", "SIP 486")
    assert alice.session is None and len(bob.sessions) == 0
