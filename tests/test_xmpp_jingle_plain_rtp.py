"""Jingle audio offered or answered as plain RTP (RTP/AVP: XEP-0177 raw UDP, no ICE, no
DTLS-SRTP) through the gateway, against a real Prosody and SIPp, juliet@xmpp.localhost being
tests/peers/jinglepeer.py sending hand-made contents (its aiortc always does ICE + DTLS).

The gateway's leg terminates audio with aiortc, which takes no plain RTP, so the gateway
refuses it cleanly, with ``unsupported-transports`` (jinglegw.PLAIN_RTP) toward XMPP:

- a plain session-initiate straight to the gateway's JID: terminated before any INVITE;
- a plain session-initiate after a XEP-0353 proceed (the SIP side already answered): the
  session terminated, the SIP call BYEd (SIPp tests/sipp/uas.xml);
- a plain session-accept of our session-initiate (SIP → XMPP): the session terminated, the
  SIP caller refused 488 (SIPp tests/sipp/uac_call_refused.xml).

Bridging plain RTP Jingle calls is not done (README).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from control.sip import sdp
from control.xmpp.jingle import Content
from control.xmpp.jinglebuild import build_jingle
from control.xmpp.jinglegw import PLAIN_RTP, RESOURCE, webrtc_audio
from control.xmpp.jinglemessage import JingleMessage
from control.xmpp.jinglesdp import sdp_to_jingle
from control.xmpp.jinglesession import Initiated, Terminated
from tests.peers.jinglepeer import send_raw
from tests.peers.ports import free_ports
from tests.peers.sipp import SippUas, run_sipp_async
from tests.peers.wait import wait_until
from tests.test_xmpp_jingle_gateway import gateway

pytestmark = [pytest.mark.peer("prosody", "aiortc"), pytest.mark.timeout(300)]

ROMEO = "romeo@sip.localhost"
OURS = f"{ROMEO}/{RESOURCE}"  # the gateway's JID for romeo in a call

PLAIN_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=mid:0\r\n"
)


def plain_rtp(author: str) -> tuple[Content, ...]:
    """One audio content of PCMU over XEP-0177 raw UDP (no ICE, no fingerprint)."""
    contents, _ = sdp_to_jingle(sdp.parse(PLAIN_SDP), author=author)
    assert contents and not webrtc_audio(contents)
    return contents


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def test_a_plain_rtp_session_initiate_is_refused_before_any_invite(tmp_path: Path) -> None:
    trace = tmp_path / "sip.trace"
    (nobody,) = free_ports(1)  # the outbound proxy: nothing listens, nothing should go there
    async with gateway(tmp_path, None, proxy_port=nobody, trace_sip=trace) as (app, juliet, _):
        session, initiate = juliet.sessions.initiate(juliet.full_jid, OURS, plain_rtp("initiator"))
        await send_raw(juliet, OURS, build_jingle(initiate))  # acked, then refused
        ended = await juliet.next_event(Terminated, timeout=30)
        assert ended.sid == session.sid and ended.reason == PLAIN_RTP
        assert len(app.jingle) == 0
    assert "INVITE" not in _read(trace)


@pytest.mark.peer("sipp")
async def test_a_plain_rtp_offer_after_proceed_ends_the_answered_sip_call(tmp_path: Path) -> None:
    with SippUas("uas") as uas:  # INVITE -> 180 -> 200 -> ACK -> BYE -> 200
        async with gateway(tmp_path, None, proxy_port=uas.port) as (app, juliet, _):
            sid = juliet.sessions.new_sid(ROMEO)
            juliet.send_message(ROMEO, JingleMessage("propose", sid, ("audio",)))
            sender, proceed = await juliet.next_message("proceed", timeout=60)  # SIPp's 200
            assert proceed.id == sid and sender == OURS
            _, initiate = juliet.sessions.initiate(
                juliet.full_jid, OURS, plain_rtp("initiator"), sid=sid
            )
            await send_raw(juliet, OURS, build_jingle(initiate))
            ended = await juliet.next_event(Terminated, timeout=30)
            assert ended.sid == sid and ended.reason == PLAIN_RTP
            _, finish = await juliet.next_message("finish", timeout=30)
            assert finish.id == sid
            assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)
        result = await uas.astop()
    assert result.stats is not None and result.stats.successful == 1, result.describe()  # BYE


@pytest.mark.peer("sipp")
async def test_a_plain_rtp_accept_refuses_the_sip_caller_488(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    async with gateway(tmp_path, None, port) as (app, juliet, _):
        keys = {"xmpp_domain": "xmpp.localhost", "sip_domain": "sip.localhost"}
        sipp = asyncio.ensure_future(
            run_sipp_async(
                "uac_call_refused", f"127.0.0.1:{port}", keys=keys, recv_timeout_ms=60_000
            )
        )
        caller, propose = await juliet.next_message("propose", timeout=60)
        juliet.send_message(caller, JingleMessage("proceed", propose.id))
        initiated: Initiated = await juliet.next_event(Initiated, timeout=60)
        accept = initiated.session.accept(plain_rtp("responder"))
        await send_raw(juliet, initiated.session.peer, build_jingle(accept))
        ended = await juliet.next_event(Terminated, timeout=30)
        assert ended.sid == propose.id and ended.reason == PLAIN_RTP
        result = await sipp
        assert result.ok, result.describe()  # 488, ACKed
        assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)
