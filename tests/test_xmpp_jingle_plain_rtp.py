"""Jingle audio offered or answered as plain RTP (RTP/AVP: XEP-0177 raw UDP, no ICE, no
DTLS-SRTP) through the gateway, against a real Prosody, baresip and SIPp, juliet@xmpp.localhost
being tests/peers/jinglepeer.py sending hand-made contents (its aiortc always does ICE + DTLS)
and, for media, plain RTP from Python (tests/peers/rtp_tone.py).

A raw-UDP session-initiate straight to the gateway's JID is translated (jingleplain.py): the
INVITE's SDP is juliet's description and candidate, baresip's answer the session-accept, and
G.722 flows between juliet's socket and baresip directly; each hears the other's tone (FFT)
and juliet's terminate is baresip's BYE. A candidate that is no IP literal, port 0 or
0.0.0.0 is ``bad-request`` with no INVITE.

What still cannot work is refused with ``unsupported-transports`` (jinglegw.PLAIN_RTP):

- ICE without a DTLS fingerprint straight to the gateway: terminated before any INVITE;
- a plain session-initiate after a XEP-0353 proceed (the SIP side already answered the
  leg's offer): the session terminated, the SIP call BYEd (SIPp tests/sipp/uas.xml);
- a plain session-accept of our session-initiate (SIP → XMPP): the session terminated, the
  SIP caller refused 488 (SIPp tests/sipp/uac_call_refused.xml).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from control.media.codecs import G722Codec
from control.sip import sdp
from control.xmpp.jingle import Candidate, Content, IceTransport, RawUdpTransport
from control.xmpp.jinglebuild import build_jingle
from control.xmpp.jinglegw import PLAIN_RTP, RESOURCE
from control.xmpp.jinglemedia import webrtc_audio
from control.xmpp.jinglemessage import JingleMessage
from control.xmpp.jinglesdp import sdp_to_jingle
from control.xmpp.jinglesession import Accepted, Initiated, JingleSession, Terminated
from tests.peers.jinglepeer import JinglePeer, iq_error, send_raw
from tests.peers.ports import free_ports
from tests.peers.rtp_tone import RtpToneClient
from tests.peers.sipp import SippUas, run_sipp_async
from tests.peers.wait import wait_until
from tests.test_xmpp_jingle_gateway import JULIET_HZ, ROMEO_HZ, _romeo_heard, _tone, gateway, romeo

pytestmark = [pytest.mark.peer("prosody", "aiortc"), pytest.mark.timeout(300)]

ROMEO = "romeo@sip.localhost"
OURS = f"{ROMEO}/{RESOURCE}"  # the gateway's JID for romeo in a call

PLAIN_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=mid:0\r\n"
)


ICE_SDP = PLAIN_SDP + (
    b"a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"
    b"a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"
)


def plain_rtp(author: str, body: bytes = PLAIN_SDP) -> tuple[Content, ...]:
    """One audio content of PCMU over XEP-0177 raw UDP (no ICE, no fingerprint)."""
    contents, _ = sdp_to_jingle(sdp.parse(body), author=author)
    assert contents and not webrtc_audio(contents)
    return contents


def with_candidate(contents: tuple[Content, ...], ip: str, port: int) -> tuple[Content, ...]:
    """``contents`` with one raw-UDP candidate at ``ip``:``port`` instead of theirs."""
    transport = RawUdpTransport((Candidate(1, ip, port, "c1"),))
    return (dataclasses.replace(contents[0], transport=transport),)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def test_ice_without_dtls_and_bad_candidates_are_refused_before_any_invite(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "sip.trace"
    (nobody,) = free_ports(1)  # the outbound proxy: nothing listens, nothing should go there
    async with gateway(tmp_path, None, proxy_port=nobody, trace_sip=trace) as (app, juliet, _):
        ice = plain_rtp("initiator", ICE_SDP)
        assert isinstance(ice[0].transport, IceTransport)
        session, initiate = juliet.sessions.initiate(juliet.full_jid, OURS, ice)
        await send_raw(juliet, OURS, build_jingle(initiate))  # acked, then refused
        ended = await juliet.next_event(Terminated, timeout=30)
        assert ended.sid == session.sid and ended.reason == PLAIN_RTP
        for ip, port in (("juliet.example", 40000), ("127.0.0.1", 0), ("0.0.0.0", 40000)):
            bad = with_candidate(plain_rtp("initiator"), ip, port)
            _, initiate = juliet.sessions.initiate(juliet.full_jid, OURS, bad)
            with pytest.raises(IqError) as caught:
                await send_raw(juliet, OURS, build_jingle(initiate))
            assert iq_error(caught.value.iq.xml) == ("bad-request", None), (ip, port)
        assert len(app.jingle) == 0
    assert "INVITE" not in _read(trace)


def _g722_offer(port: int) -> tuple[Content, ...]:
    """juliet's raw-UDP offer: G.722 then PCMU at 127.0.0.1:``port`` (her Python socket)."""
    offer = (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 9 0\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=ptime:20\r\na=mid:audio\r\n"
    ).encode()
    return plain_rtp("initiator", offer)


async def _raw_udp_call(
    juliet: JinglePeer, to: str, port: int, monkeypatch: pytest.MonkeyPatch, first: str = "G722"
) -> tuple[JingleSession, tuple[str, int]]:
    """juliet's raw-UDP session-initiate to ``to``, accepted: the session and where the
    accept says to send RTP (``first`` the answer's codec)."""

    async def no_media(*_: Any, **__: Any) -> None:
        return None  # juliet's media is the RTP socket, not aiortc

    monkeypatch.setattr(juliet, "_remote", no_media)
    session, initiate = juliet.sessions.initiate(juliet.full_jid, to, _g722_offer(port))
    await send_raw(juliet, to, build_jingle(initiate))
    accepted = await juliet.next_event(Accepted, timeout=60)
    assert accepted.sid == session.sid and juliet.errors == []
    (content,) = accepted.contents
    assert content.name == "audio" and content.description is not None
    assert [p.name for p in content.description.payload_types][:1] == [first]
    assert isinstance(content.transport, RawUdpTransport)
    rtp = next(c for c in content.transport.candidates if c.component == 1)
    return session, (rtp.ip, rtp.port)


def _heard_tone(client: RtpToneClient) -> float:
    heard = client.heard(G722Codec())
    assert heard.size >= 16000, "juliet heard less than a second"
    assert {p.payload_type for p in client.collector.packets} == {9}
    return _tone(heard, 16000)


@pytest.mark.peer("baresip")
async def test_a_raw_udp_call_to_a_sip_phone_carries_rtp_phone_to_phone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """juliet offers G.722 and PCMU over raw UDP from a Python RTP socket; baresip (romeo,
    G.722 only) answers through the gateway: the INVITE offers juliet's own address, the
    session-accept carries baresip's, the tones cross, juliet's terminate is baresip's BYE."""
    trace = tmp_path / "sip.trace"
    client = RtpToneClient(G722Codec(), 9)
    port = await client.open()
    try:
        with romeo(tmp_path, answermode="auto") as ua:
            async with gateway(tmp_path, ua, trace_sip=trace) as (app, juliet, _):
                session, rtp = await _raw_udp_call(juliet, OURS, port, monkeypatch)
                await client.play(rtp, JULIET_HZ, 4.0)
                assert abs(_heard_tone(client) - ROMEO_HZ) < 15
                assert len(app.jingle) == 1
                await send_raw(juliet, OURS, build_jingle(session.terminate("success")))
                await asyncio.to_thread(ua.wait_event, "CALL_CLOSED", 30)
                assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)
            romeo_heard = _romeo_heard(ua)
    finally:
        client.close()
    assert abs(_tone(romeo_heard.samples, romeo_heard.rate) - JULIET_HZ) < 15
    sip = _read(trace)
    assert f"m=audio {port} RTP/AVP 9 0" in sip  # the INVITE offered juliet's own socket
    assert "BYE" in sip


@pytest.mark.peer("baresip")
async def test_a_raw_udp_call_joins_a_rooms_audio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A raw-UDP session-initiate to lobby@sip.localhost is an INVITE to sip:lobby@sip.localhost
    (Chorus its own outbound proxy, as in tests/test_xmpp_jingle_gateway.py), answered by the
    conference: juliet's RTP goes to the mix, baresip in the same room hears her tone and she
    hears its."""
    (port,) = free_ports(1)
    client = RtpToneClient(G722Codec(), 9)
    rtp_port = await client.open()
    room = f"lobby@sip.localhost/{RESOURCE}"
    try:
        with romeo(tmp_path, answermode="auto", outbound=port) as ua:
            async with gateway(tmp_path, ua, port, proxy_port=port) as (app, juliet, _):
                ua.dial("sip:lobby@sip.localhost")
                await asyncio.to_thread(ua.wait_event, "CALL_ESTABLISHED", 60)
                session, rtp = await _raw_udp_call(juliet, room, rtp_port, monkeypatch)
                await client.play(rtp, JULIET_HZ, 5.0)
                assert abs(_heard_tone(client) - ROMEO_HZ) < 15
                await send_raw(juliet, room, build_jingle(session.terminate("success")))
                assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)
                ua.hangup()
            romeo_heard = _romeo_heard(ua)
    finally:
        client.close()
    assert abs(_tone(romeo_heard.samples, romeo_heard.rate) - JULIET_HZ) < 15


@pytest.mark.peer("sipp")
async def test_a_raw_udp_call_answers_a_refresh_and_refuses_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIPp (tests/sipp/uas_refresh.xml) answers, re-INVITEs with its SDP unchanged (a
    session refresh: 200 with juliet's side again) and then with a=sendonly (488: with no leg
    the gateway cannot carry a change); the call stays up and juliet's terminate is its BYE."""
    trace = tmp_path / "sip.trace"
    (rtp_port,) = free_ports(1)
    with SippUas("uas_refresh") as uas:
        peers = gateway(tmp_path, None, proxy_port=uas.port, trace_sip=trace)
        async with peers as (app, juliet, _):
            session, _rtp = await _raw_udp_call(juliet, OURS, rtp_port, monkeypatch, first="PCMU")
            assert await wait_until(lambda: "SIP/2.0 488" in _read(trace), timeout=30)
            assert len(app.jingle) == 1
            await send_raw(juliet, OURS, build_jingle(session.terminate("success")))
            assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)
        result = await uas.astop()
    assert result.stats is not None and result.stats.successful == 1, result.describe()
    assert f"m=audio {rtp_port} RTP/AVP 0" in _read(trace)  # the refresh's answer: juliet's


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
