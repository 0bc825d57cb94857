"""Echo against a real `chorus serve` process: SIPp calls (their SDP answers checked, pcap
audio returned packet for packet), RTP tones back by FFT, MESSAGE, re-INVITE, session limit,
TLS, and SIGTERM with calls up."""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
from collections.abc import Iterator

import pytest

from control.echo.app import _done_within
from control.media.codecs import G722Codec, PcmuCodec
from control.media.rtp import RtpPacket
from control.media.tone import tone_power
from control.sip import sdp
from control.sip.session import SessionState
from tests.peers.chorus import ROOT, ChorusProcess
from tests.peers.ports import free_port
from tests.peers.require import SIPP_PCAP
from tests.peers.rtp_tone import RtpToneClient
from tests.peers.sipclient import SipClient
from tests.peers.sipp import SippUas, run_sipp, scenario_path
from tests.peers.sniffer import UdpSniffer
from tests.peers.wait import wait_until
from tests.test_conference_peers import pcap_rtp

needs_sipp = pytest.mark.peer("sipp")


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess({"echo": {"session_limit": 600}}) as process:
        yield process
        assert process.alive, process.log()


def offer(port: int, codecs: str, rtpmaps: str, direction: str = "sendrecv") -> bytes:
    return (
        "v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {codecs}\r\n{rtpmaps}a=ptime:20\r\na={direction}\r\n"
    ).encode()


PCMU_OFFER = "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
G722_OFFER = "a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n"


@needs_sipp
@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_200_calls_to_echo(chorus: ChorusProcess, transport: str) -> None:
    result = run_sipp(
        scenario_path("uac_echo.xml"),
        f"127.0.0.1:{chorus.sip_port}",
        transport=transport,  # type: ignore[arg-type]
        calls=200,
        rate=50,
        service="echo",
        pause_ms=200,
        timeout=90,
    )
    assert result.returncode == 0, result.describe()
    assert result.stats is not None and result.stats.successful == 200, result.describe()
    assert chorus.alive


@needs_sipp
@pytest.mark.parametrize(
    ("connection", "mline", "rtpmap", "by_regexp"),
    [
        ("c=IN IP4 127.0.0.1", "m=audio 4000 RTP/AVP 18", "a=rtpmap:18 G729/8000", True),
        ("c=IN IP4 127.0.0.1", "m=audio 4000 RTP/AVP 8", "a=rtpmap:8 G729/8000", True),
        # SIPp reads the answer's media address itself (the scenario can play RTP) and stops
        # on these two before any check runs: the call fails all the same.
        ("c=IN IP4 127.0.0.1", "m=audio 0 RTP/AVP 8", "a=rtpmap:8 PCMA/8000", False),
        ("a=x-no-connection", "m=audio 4000 RTP/AVP 8", "a=rtpmap:8 PCMA/8000", False),
    ],
    ids=["codec-not-offered", "rtpmap-not-offered", "port-0", "no-c-line"],
)
def test_sipp_echo_scenario_refuses_a_bad_answer(
    connection: str, mline: str, rtpmap: str, by_regexp: bool
) -> None:
    # The checks uac_echo.xml makes of the 200's SDP bite: a SIPp UAS answers what we say.
    keys = {"answer_c": connection, "answer_m": mline, "answer_a": rtpmap}
    extra = [arg for key, value in keys.items() for arg in ("-key", key, value)]
    with SippUas("uas_answer", extra_args=extra) as uas:
        result = run_sipp(
            "uac_echo", uas.address, service="echo", pause_ms=0, recv_timeout_ms=3000, timeout=20
        )
    assert result.returncode != 0, result.describe()
    assert result.stats is not None and result.stats.successful == 0, result.describe()
    if by_regexp:
        # SIPp logs the failed check, then gives the call up.
        assert result.stats.failed == 1, result.describe()
        assert "Failed regexp match" in result.errors, result.describe()


@needs_sipp
@pytest.mark.peer("sipp-pcap")
@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_pcap_audio_comes_back(chorus: ChorusProcess, transport: str) -> None:
    # SIPp plays 7.08 s of G.711 speech from its media port; echo returns each packet from
    # the port it answered, under its own SSRC. SIPp keeps no RTP statistics, so the packets
    # reaching SIPp's media port are read off the wire (tests/peers/sniffer.py).
    media_port = free_port("udp")
    with UdpSniffer(media_port) as sniffer:
        result = run_sipp(
            "uac_echo",
            f"127.0.0.1:{chorus.sip_port}",
            transport=transport,  # type: ignore[arg-type]
            service="echo",
            pause_ms=8000,  # past the pcap's end
            trace_messages=True,
            extra_args=["-set", "rtp", "1", "-mp", str(media_port)],
            timeout=40,
        )
        sent = pcap_rtp(SIPP_PCAP.read_bytes())
        # Echo answers each packet as it comes; the call lasted past the last one.
        returned = sniffer.datagrams()
    assert result.ok, result.describe()
    answers = [m for m in re.findall(r"m=audio (\d+) RTP/AVP (\d+)", result.messages)]
    assert answers, result.messages[-3000:]
    answer_port, codec = answers[-1]
    assert codec == "8"  # PCMA, the offer's first
    assert returned, "no RTP came back to SIPp"
    assert {d.source for d in returned} == {("127.0.0.1", int(answer_port))}
    back = [RtpPacket.parse(d.payload) for d in returned]
    assert [p.payload for p in back] == [p.payload for p in sent]
    assert [p.sequence for p in back] == [p.sequence for p in sent]
    assert len({p.ssrc for p in back}) == 1 and back[0].ssrc != sent[0].ssrc


@pytest.mark.parametrize(
    ("codec_name", "pt", "rtpmaps"), [("PCMU", "0", PCMU_OFFER), ("G722", "9", G722_OFFER)]
)
async def test_tone_comes_back(
    chorus: ChorusProcess, codec_name: str, pt: str, rtpmaps: str
) -> None:
    codec = PcmuCodec() if codec_name == "PCMU" else G722Codec()
    decoder = PcmuCodec() if codec_name == "PCMU" else G722Codec()
    client = RtpToneClient(codec, int(pt))
    port = await client.open()
    async with SipClient("udp") as sip:
        session, response = await sip.call(
            f"sip:echo@127.0.0.1:{chorus.sip_port}",
            offer(port, f"{pt} 101", rtpmaps),
            chorus.sip_port,
        )
        assert session is not None, response.status
        answer = sdp.parse(response.body)
        audio = answer.media[0]
        assert audio.rtpmaps()[0].encoding.upper() == codec_name
        conn = answer.connection_of(audio)
        assert conn is not None
        sent = await client.play((conn.address, audio.port), 1000.0, 1.5)
        # The reflector returns every packet as it arrives: wait for all of them.
        await wait_until(lambda: len(client.collector.packets) >= sent)
        await session.bye()
    client.close()
    heard = decoder_output = client.heard(decoder)
    rate = decoder.sample_rate
    assert len(decoder_output) > rate // 2, "too little audio came back"
    heard = heard[rate // 10 :]  # skip the codec's start-up
    # tone_power is in dB re full scale: the tone we sent, loud; elsewhere, 30 dB down or more.
    assert tone_power(heard, rate, 1000.0) > -20.0
    assert tone_power(heard, rate, 1000.0) > tone_power(heard, rate, 1500.0) + 30
    assert tone_power(heard, rate, 1000.0) > tone_power(heard, rate, 600.0) + 30


async def test_reinvite_hold_resume_and_codec_change(chorus: ChorusProcess) -> None:
    client = RtpToneClient(PcmuCodec(), 0)
    port = await client.open()
    async with SipClient("udp") as sip:
        session, response = await sip.call(
            f"sip:echo@127.0.0.1:{chorus.sip_port}",
            offer(port, "0 9 101", PCMU_OFFER + "a=rtpmap:9 G722/8000\r\n"),
            chorus.sip_port,
        )
        assert session is not None
        first = sdp.parse(response.body)
        remote = (first.connection_of(first.media[0]).address, first.media[0].port)  # type: ignore[union-attr]
        # Hold: we send only; echo must answer recvonly and stop sending.
        held = await session.reinvite(offer(port, "0 101", PCMU_OFFER, "sendonly"))
        assert held.status == 200
        held_sdp = sdp.parse(held.body)
        assert held_sdp.direction_of(held_sdp.media[0]) is sdp.Direction.RECVONLY
        # The reflector answers each packet at once, so anything it reflected during these
        # 0.4 s of real-time sending would be here; stragglers are caught below: they would be
        # PCMU (PT 0) and reach us, in order, before any G.722 packet after the resume.
        await client.play(remote, 1000.0, 0.4)
        assert client.collector.packets == []
        # Resume with a codec change to G.722.
        resumed = await session.reinvite(offer(port, "9 101", G722_OFFER))
        assert resumed.status == 200
        resumed_sdp = sdp.parse(resumed.body)
        assert resumed_sdp.media[0].rtpmaps()[0].encoding == "G722"
        assert resumed_sdp.direction_of(resumed_sdp.media[0]) is sdp.Direction.SENDRECV
        assert resumed_sdp.origin.sess_version > first.origin.sess_version
        client.codec = G722Codec()
        client.payload_type = 9
        sent = await client.play(remote, 1000.0, 0.6)
        await wait_until(lambda: len(client.collector.packets) >= sent)
        assert len(client.collector.packets) == sent, "not all the audio came back after resume"
        assert {p.payload_type for p in client.collector.packets} == {9}
        await session.bye()
    client.close()


async def test_offer_without_common_codec_gets_488(chorus: ChorusProcess) -> None:
    async with SipClient("udp") as sip:
        session, response = await sip.call(
            f"sip:echo@127.0.0.1:{chorus.sip_port}",
            offer(4000, "18", "a=rtpmap:18 G729/8000\r\n"),
            chorus.sip_port,
        )
        assert session is None
        assert response.status == 488


async def test_session_limit_ends_call_with_bye() -> None:
    with ChorusProcess({"echo": {"session_limit": 1.5}}) as chorus:
        async with SipClient("tcp") as sip:
            session, _ = await sip.call(
                f"sip:echo@127.0.0.1:{chorus.sip_port}",
                offer(4000, "0", PCMU_OFFER),
                chorus.sip_port,
            )
            assert session is not None
            reason = await asyncio.wait_for(session.terminated, 15)
            assert reason == "remote BYE"
            assert session.state is SessionState.TERMINATED
            # Echo logs why it hung up just before sending that BYE.
            assert f"echo call {session.dialog.call_id} reached its limit" in chorus.log()


async def test_waiting_for_the_bye_never_cancels_the_session_future() -> None:
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[str] = loop.create_future()
    assert not await _done_within(ended, 0.01)  # the limit: the call goes on
    assert not ended.done()
    loop.call_soon(ended.set_result, "remote BYE")
    assert await _done_within(ended, 60) and ended.result() == "remote BYE"
    assert await _done_within(ended, 0)  # already ended
    pending: asyncio.Future[str] = loop.create_future()
    waiting = asyncio.create_task(_done_within(pending, 60))
    await asyncio.sleep(0)
    waiting.cancel()  # the echo call's task cancelled (shutdown): the session's future stays
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not pending.done()
    pending.set_result("later")


async def test_tls_options_and_invite(chorus: ChorusProcess) -> None:
    # The client trusts exactly the certificate Chorus generated into its spool on first
    # start, and checks it names 127.0.0.1: the handshake proves that certificate is served.
    cert = chorus.workdir / "spool" / "tls" / "chorus.crt"
    assert cert.is_file()
    shipped = subprocess.run(
        ["git", "ls-files", "*.pem", "*.key", "*.crt"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert shipped == "", f"key material in the repository: {shipped}"
    context = ssl.create_default_context(cafile=str(cert))
    assert context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED
    async with SipClient("tls", tls_context=context) as sip:
        options = await sip.request(
            "OPTIONS", f"sip:echo@127.0.0.1:{chorus.tls_port}", chorus.tls_port
        ).final
        assert options.status == 200
        assert "INVITE" in (options.headers.get("Allow") or "")
        session, response = await sip.call(
            f"sips:echo@127.0.0.1:{chorus.tls_port}",
            offer(4000, "0", PCMU_OFFER),
            chorus.tls_port,
        )
        assert session is not None, response.status
        assert response.status == 200
        contact = response.contacts[0].uri
        assert str(contact).startswith("sips:")
        await session.bye()
        assert session.state is SessionState.TERMINATED


async def test_message_reply_quotes_text(chorus: ChorusProcess) -> None:
    async with SipClient("udp") as sip:
        response = await sip.request(
            "MESSAGE",
            f"sip:echo@127.0.0.1:{chorus.sip_port}",
            chorus.sip_port,
            body=b"hello, echo",
            content_type="text/plain",
        ).final
        assert response.status == 200
        await wait_until(lambda: sip.received)
        assert sip.received, "no MESSAGE came back"
        reply = sip.received[0].request
        assert reply.method == "MESSAGE"
        assert b"hello, echo" in reply.body


async def test_sigterm_ends_calls_with_bye_and_exits() -> None:
    chorus = ChorusProcess({"server": {"shutdown_timeout": 5}}).start()
    try:
        async with SipClient("udp") as sip:
            sessions = []
            for _ in range(3):
                session, _ = await sip.call(
                    f"sip:echo@127.0.0.1:{chorus.sip_port}",
                    offer(4000, "0", PCMU_OFFER),
                    chorus.sip_port,
                )
                assert session is not None
                sessions.append(session)
            loop = asyncio.get_running_loop()
            code = await loop.run_in_executor(None, chorus.stop)
            assert code == 0, chorus.log()
            for session in sessions:
                assert session.terminated.done()
                assert session.terminated.result() == "remote BYE"
    finally:
        chorus.stop()


@pytest.mark.parametrize(
    ("pt", "rtpmap", "codec_name"),
    [("111", "opus/48000/2", "opus"), ("97", "speex/16000", "speex")],
)
async def test_wideband_codecs_echo_when_configured(pt: str, rtpmap: str, codec_name: str) -> None:
    from control.media.codecs import codec_for

    name, rate, *channels = rtpmap.split("/")
    factory = codec_for(name, int(rate), int(channels[0]) if channels else 1)
    assert factory is not None
    overrides = {"rtp": {"codecs": ["G722", "PCMU", "speex", "opus", "telephone-event"]}}
    with ChorusProcess(overrides) as chorus:
        client = RtpToneClient(factory(), int(pt))
        port = await client.open()
        async with SipClient("udp") as sip:
            session, response = await sip.call(
                f"sip:echo@127.0.0.1:{chorus.sip_port}",
                offer(port, pt, f"a=rtpmap:{pt} {rtpmap}\r\n"),
                chorus.sip_port,
            )
            assert session is not None, response.status
            answer = sdp.parse(response.body)
            assert answer.media[0].rtpmaps()[0].encoding.lower() == codec_name
            conn = answer.connection_of(answer.media[0])
            assert conn is not None
            sent = await client.play((conn.address, answer.media[0].port), 1000.0, 1.5)
            await wait_until(lambda: len(client.collector.packets) >= sent)
            await session.bye()
        client.close()
        decoder = factory()
        heard = client.heard(decoder)[decoder.sample_rate // 5 :]
        assert len(heard) > decoder.sample_rate // 2
        assert tone_power(heard, decoder.sample_rate, 1000.0) > -20.0
        assert (
            tone_power(heard, decoder.sample_rate, 1000.0)
            > tone_power(heard, decoder.sample_rate, 1500.0) + 30
        )
