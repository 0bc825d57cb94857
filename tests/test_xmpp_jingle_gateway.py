"""Jingle audio through the gateway (issue 12 item 6), against a real Prosody and a real SIP
phone: juliet@xmpp.localhost is tests/peers/jinglepeer.py (slixmpp + aiortc: ICE, DTLS-SRTP),
romeo@sip.localhost is baresip, Chorus' outbound proxy, so every INVITE the gateway places
toward sip.localhost reaches it. Chorus terminates the WebRTC half (control/xmpp/jinglemedia.py)
and carries the audio to baresip as plain RTP (control/xmpp/jinglegw.py).

- XMPP → SIP with XEP-0353, as Conversations calls: propose to the bare JID, the INVITE, 180 →
  ``<ringing/>``, 200 → ``<proceed/>``, the session-initiate answered by a session-accept; each
  hears the other's tone (FFT), and juliet's hang-up is baresip's BYE.
- A SIP failure (baresip declining the call: 486) arrives as the ``<reject/>`` with the
  jinglecall reason (busy, "SIP 486").
- SIP → XMPP: baresip dials sip:juliet@xmpp.localhost; the propose reaches juliet, her
  proceed brings the session-initiate, her accept the 200; each hears the other's tone.
  Hung up while ringing (baresip's CANCEL) it is a ``<retract/>`` at once, not at the ring
  timeout (SIPp's CANCEL: tests/test_xmpp_jingle_gateway_cancel.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from slixmpp.exceptions import IqError

from control.cli import build_server
from control.config import parse_config
from control.media.tone import dominant_frequencies, sine
from control.xmpp.app import XmppGateway
from control.xmpp.jingle import Action, Jingle, Reason
from control.xmpp.jinglebuild import build_jingle
from control.xmpp.jinglegw import RESOURCE
from control.xmpp.jinglemessage import JingleMessage
from control.xmpp.jinglesession import Accepted, Informed, Initiated, Terminated
from tests.peers.baresip import BaresipProcess, write_wav
from tests.peers.jinglepeer import RATE, JinglePeer, iq_error, send_raw
from tests.peers.ports import free_ports
from tests.peers.prosody import ProsodyProcess, chorus_config, client_ssl_context
from tests.peers.wait import wait_until

pytestmark = [pytest.mark.peer("prosody", "aiortc", "baresip"), pytest.mark.timeout(300)]

JULIET_HZ, ROMEO_HZ = 600.0, 1000.0
ROMEO = "romeo@sip.localhost"
CODEC = "G722/16000/1"
SIP_RATE = 16000


@contextlib.contextmanager
def romeo(
    tmp_path: Path, *, answermode: str, seconds: float = 30.0, outbound: int | None = None
) -> Iterator[BaresipProcess]:
    """baresip as sip:romeo, sending ROMEO_HZ for ``seconds`` once a call is up; with
    ``outbound`` (Chorus' SIP port) every request it sends goes through Chorus."""
    tone = sine(ROMEO_HZ, seconds, SIP_RATE, 0.3)
    source = write_wav(tmp_path / "romeo.wav", np.asarray(tone, dtype=np.int16), SIP_RATE)
    ua = BaresipProcess(source, codec=CODEC, user="romeo", answermode=answermode)
    if outbound is not None:
        accounts = ua.config_dir / "accounts"
        line = accounts.read_text().strip().replace(ua.aor, f"sip:{ROMEO}")  # From: the SIP user
        accounts.write_text(f'{line};outbound="sip:127.0.0.1:{outbound}"\n')
    with ua:
        yield ua


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path,
    ua: BaresipProcess | None,
    port: int | None = None,
    *,
    trace_sip: Path | None = None,
    **xmpp: Any,
) -> AsyncIterator[tuple[XmppGateway, JinglePeer, int]]:
    """Prosody, Chorus (on ``port``, else a free one) with the gateway (baresip ``ua`` as its
    outbound proxy unless ``proxy_port`` says otherwise; None: no proxy), juliet online;
    ``trace_sip``: where Chorus writes its SIP trace (tests/peers/siptrace.py)."""
    prosody = ProsodyProcess(users={"juliet": "juliet-pw"}).start()
    if port is None:
        (port,) = free_ports(1)
    proxy = xmpp.pop("proxy_port", ua.sip_port if ua is not None else None)
    table = chorus_config(
        prosody,
        tmp_path,
        port,
        proxy_port=proxy,
        jingle_ice_addresses=["127.0.0.1"],
        jingle_ring_timeout=xmpp.pop("jingle_ring_timeout", 30),
        **xmpp,
    )
    if trace_sip is not None:
        table["server"]["trace_sip"] = str(trace_sip)
    server = build_server(parse_config(table))
    await server.start()
    app = server.applications["xmpp"]
    assert isinstance(app, XmppGateway)
    app.start()
    juliet = JinglePeer(
        f"juliet@{prosody.xmpp_domain}/phone",
        "juliet-pw",
        freq=JULIET_HZ,
        ssl_context=client_ssl_context(),
    )
    try:
        assert await wait_until(lambda: app.component.connected, timeout=30)
        await juliet.connect("127.0.0.1", prosody.c2s_port)
        yield app, juliet, port
    finally:
        await juliet.close()
        await server.stop()
        prosody.stop()
        prosody.cleanup()


def _tone(pcm: Any, rate: int) -> float:
    (freq,) = dominant_frequencies(pcm[-rate:], rate, 1)
    return float(freq)


def _romeo_heard(ua: BaresipProcess) -> Any:
    recordings = ua.recordings("dec")
    assert recordings, ua.log()
    return recordings[-1]


async def test_xmpp_calls_sip_both_hear_and_hang_up(tmp_path: Path) -> None:
    with romeo(tmp_path, answermode="auto") as ua:
        async with gateway(tmp_path, ua) as (app, juliet, _):
            sid = juliet.propose(ROMEO)
            sender, proceed = await juliet.next_message("proceed", timeout=60)
            assert proceed.id == sid and sender == f"{ROMEO}/{RESOURCE}"
            accepted = await juliet.next_event(Accepted, timeout=60)
            assert accepted.sid == sid
            assert await wait_until(lambda: juliet.heard_seconds() >= 3.0, timeout=60)
            await asyncio.sleep(2.0)  # romeo's recording of juliet's tone grows meanwhile
            assert abs(_tone(juliet.heard(), RATE) - ROMEO_HZ) < 15, _tone(juliet.heard(), RATE)
            assert len(app.jingle) == 1
            await juliet.hangup()
            await asyncio.to_thread(ua.wait_event, "CALL_CLOSED", 30)
            assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)
            assert juliet.errors == []
        heard = _romeo_heard(ua)
        assert heard.samples.size >= heard.rate, "romeo heard less than a second"
        assert abs(_tone(heard.samples, heard.rate) - JULIET_HZ) < 15


async def test_a_sip_refusal_is_a_jingle_reject_with_its_reason(tmp_path: Path) -> None:
    with romeo(tmp_path, answermode="manual") as ua:
        async with gateway(tmp_path, ua) as (app, juliet, _):
            sid = juliet.propose(ROMEO)
            await asyncio.to_thread(ua.wait_event, "CALL_INCOMING", 60)
            _, ringing = await juliet.next_message("ringing", timeout=30)  # baresip's 180
            assert ringing.id == sid
            ua.hangup()  # baresip declines the ringing call: 486
            _, reject = await juliet.next_message("reject", timeout=30)
            assert reject.id == sid
            assert reject.reason == Reason("busy", "SIP 486")
            assert juliet.session is None
            assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)


async def test_sip_calls_xmpp_both_hear(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    with romeo(tmp_path, answermode="auto", outbound=port) as ua:
        async with gateway(tmp_path, ua, port) as (app, juliet, _):
            ua.dial("sip:juliet@xmpp.localhost")
            try:
                caller, propose = await juliet.next_message("propose", timeout=60)
            except TimeoutError:
                raise AssertionError(ua.log()) from None
            assert caller == f"{ROMEO}/{RESOURCE}" and propose.audio
            juliet.send_message(caller, JingleMessage("proceed", propose.id))
            initiated = await juliet.next_event(Initiated, timeout=60)
            assert initiated.session.sid == propose.id
            await juliet.answer(initiated)
            await asyncio.to_thread(ua.wait_event, "CALL_ESTABLISHED", 60)
            assert await wait_until(lambda: juliet.heard_seconds() >= 3.0, timeout=60)
            await asyncio.sleep(2.0)
            assert abs(_tone(juliet.heard(), RATE) - ROMEO_HZ) < 15
            assert len(app.jingle) == 1
            ua.hangup()
            ended = await juliet.next_event(Terminated, timeout=30)
            assert ended.reason is not None and ended.reason.condition == "success"
            assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)
        heard = _romeo_heard(ua)
        assert abs(_tone(heard.samples, heard.rate) - JULIET_HZ) < 15


async def test_an_xmpp_reject_answers_the_sip_invite_with_its_status(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    with romeo(tmp_path, answermode="auto", outbound=port) as ua:
        async with gateway(tmp_path, ua, port) as (app, juliet, _):
            ua.dial("sip:juliet@xmpp.localhost")
            caller, propose = await juliet.next_message("propose", timeout=60)
            juliet.send_message(caller, JingleMessage("ringing", propose.id))
            await asyncio.to_thread(ua.wait_event, "CALL_RINGING", 30)  # our 180
            juliet.send_message(caller, JingleMessage("reject", propose.id, reason=Reason("busy")))
            closed = await asyncio.to_thread(ua.wait_event, "CALL_CLOSED", 30)
            assert "486" in str(closed.get("param")), closed  # jinglecall: busy -> 486
            assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)


async def test_a_session_initiate_straight_to_the_gateway_jid(tmp_path: Path) -> None:
    """A client that skips XEP-0353 sends its session-initiate to a full JID of ours: the
    INVITE goes out, the 200 is its session-accept, the tones cross, romeo's BYE ends it."""
    with romeo(tmp_path, answermode="auto") as ua:
        async with gateway(tmp_path, ua) as (app, juliet, _):
            session = await juliet.call(f"{ROMEO}/{RESOURCE}")
            accepted = await juliet.next_event(Accepted, timeout=60)
            assert accepted.sid == session.sid
            assert await wait_until(lambda: juliet.heard_seconds() >= 3.0, timeout=60)
            assert abs(_tone(juliet.heard(), RATE) - ROMEO_HZ) < 15
            ua.hangup()
            ended = await juliet.next_event(Terminated, timeout=30)
            assert ended.reason is not None and ended.reason.condition == "success"
            assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)
            assert juliet.errors == []


async def test_hold_both_ways(tmp_path: Path) -> None:
    """XEP-0167 hold from juliet is a re-INVITE that stops receiving (sendonly from Chorus,
    baresip sees a remote offer); baresip's hold (a sendonly re-INVITE) reaches juliet as
    session-info hold, its resume as unhold."""
    with romeo(tmp_path, answermode="auto") as ua:
        async with gateway(tmp_path, ua) as (_, juliet, _port):
            await juliet.call(f"{ROMEO}/{RESOURCE}")
            await juliet.next_event(Accepted, timeout=60)
            await asyncio.to_thread(ua.wait_event, "CALL_ESTABLISHED", 30)
            mark = len(ua.events)
            await juliet.hold()
            offer = await asyncio.to_thread(
                ua.wait_event,
                lambda e: e.get("type") == "CALL_REMOTE_SDP" and e.get("param") == "offer",
                30,
                start=mark,
            )
            assert offer
            ua.command("hold")
            held = await juliet.next_event(Informed, timeout=30)
            assert held.info.kind == "hold"
            ua.command("resume")
            resumed = await juliet.next_event(Informed, timeout=30)
            assert resumed.info.kind == "unhold"
            assert juliet.errors == []
            await juliet.hangup()


async def test_errors_the_limit_a_retract_and_a_refused_initiate(tmp_path: Path) -> None:
    """An unknown sid is unknown-session and a sid-less jingle bad-request (the XEP-0166
    errors, from the gateway's JID); at max_jingle_calls a second propose is rejected busy;
    a retract CANCELs the ringing INVITE; a SIP refusal of a plain session-initiate is its
    session-terminate with the mapped reason."""
    with romeo(tmp_path, answermode="manual") as ua:
        async with gateway(tmp_path, ua, max_jingle_calls=1) as (app, juliet, _):
            ours = f"{ROMEO}/{RESOURCE}"
            late = build_jingle(Jingle(Action.SESSION_INFO, "no-such-sid"))
            with pytest.raises(IqError) as caught:
                await send_raw(juliet, ours, late)
            assert iq_error(caught.value.iq.xml) == ("item-not-found", "unknown-session")
            bad = ET.fromstring("<jingle xmlns='urn:xmpp:jingle:1' action='session-info'/>")
            with pytest.raises(IqError) as caught:
                await send_raw(juliet, ours, bad)
            assert iq_error(caught.value.iq.xml) == ("bad-request", None)
            first = juliet.propose(ROMEO)
            await asyncio.to_thread(ua.wait_event, "CALL_INCOMING", 60)
            second = juliet.propose(ROMEO)
            _, busy = await juliet.next_message("reject", timeout=30)
            assert busy.id == second and busy.reason is not None
            assert busy.reason.condition == "busy"
            mark = len(ua.events)
            juliet.send_message(ROMEO, JingleMessage("retract", first))
            await asyncio.to_thread(ua.wait_event, "CALL_CLOSED", 30, start=mark)
            assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)
            mark = len(ua.events)
            session = await juliet.call(ours)
            await asyncio.to_thread(ua.wait_event, "CALL_INCOMING", 60, start=mark)
            ua.hangup()
            ended = await juliet.next_event(Terminated, timeout=30)
            assert ended.sid == session.sid
            assert ended.reason == Reason("busy", "SIP 486")


async def test_an_xmpp_call_joins_a_rooms_audio(tmp_path: Path) -> None:
    """A Jingle call to lobby@sip.localhost is an INVITE to sip:lobby@sip.localhost; with
    Chorus as its own outbound proxy (as a SIP provider's proxy routes the conference domain
    back to it) that INVITE reaches the conference application, so juliet is a participant of
    the room's audio: baresip dialled into the same room hears her tone through the mix and she
    hears its."""
    (port,) = free_ports(1)
    with romeo(tmp_path, answermode="auto", outbound=port) as ua:
        async with gateway(tmp_path, ua, port, proxy_port=port) as (app, juliet, _):
            ua.dial("sip:lobby@sip.localhost")
            await asyncio.to_thread(ua.wait_event, "CALL_ESTABLISHED", 60)
            juliet.propose("lobby@sip.localhost")
            await juliet.next_message("proceed", timeout=60)
            await juliet.next_event(Accepted, timeout=60)
            assert await wait_until(lambda: juliet.heard_seconds() >= 4.0, timeout=60)
            await asyncio.sleep(2.0)
            assert abs(_tone(juliet.heard(), RATE) - ROMEO_HZ) < 15
            assert len(app.jingle) == 1
            await juliet.hangup()
            assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)
            ua.hangup()
        heard = _romeo_heard(ua)
        assert abs(_tone(heard.samples, heard.rate) - JULIET_HZ) < 15


async def test_a_baresip_cancel_retracts_the_proposal(tmp_path: Path) -> None:
    """romeo hangs up his ringing call to juliet (libre's CANCEL, after our 180): juliet gets
    the retract (cancel) well before ``jingle_ring_timeout``, so it was the CANCEL's."""
    (port,) = free_ports(1)
    with romeo(tmp_path, answermode="auto", outbound=port) as ua:
        async with gateway(tmp_path, ua, port, jingle_ring_timeout=120) as (app, juliet, _):
            ua.dial("sip:juliet@xmpp.localhost")
            caller, propose = await juliet.next_message("propose", timeout=60)
            juliet.send_message(caller, JingleMessage("ringing", propose.id))
            await asyncio.to_thread(ua.wait_event, "CALL_RINGING", 30)  # our 180
            ua.hangup()  # CANCEL of the ringing INVITE
            _, retract = await juliet.next_message("retract", timeout=20)
            assert retract.id == propose.id
            assert retract.reason is not None and retract.reason.condition == "cancel"
            assert await wait_until(lambda: len(app.jingle) == 0, timeout=30)
