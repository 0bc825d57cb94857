"""RTCP with a real peer: baresip in a conference room on an in-process Chorus server.

baresip (libre's RTCP) sends sender and receiver reports on its own ~5 s schedule; the room
reports to it every `rtp.rtcp_interval` (0.5 s here). Both sides must understand each
other:

* Chorus read baresip's reports (the engine's `rtcp_received` counter), and
  `AudioEngine.quality()` for baresip's leg carries what baresip says about our stream (no
  loss on loopback, a jitter figure, a round-trip time from the LSR/DLSR echoing one of our
  sender reports) next to our own measurement of baresip's stream;
* baresip read ours: each compound it receives raises `CALL_RTCP` with its `rtcp_stats`,
  whose `tx` side is what our report blocks said about its stream, and whose `rtt` turns
  non-zero once one of our blocks echoed its own sender report.

With `rtcp_mux yes` baresip offers `a=rtcp-mux` and the room answers it (RFC 5761): RTCP
flows on the RTP port; without it, on port + 1 (RFC 3550 §11). With SDES-SRTP the
reports are SRTCP (RFC 3711 §3.4) both ways. (baresip's RTCP BYE at hang-up fails SRTCP
validation here; the test stops asking before it.)

The echo does the same with baresip calling it over Opus with rtcp-mux: the answer muxes,
the echo's reports count in Opus's 48 kHz RTP clock, and each side gets a round trip.

The server runs in this process (`build_server`, what `chorus serve` builds) so the test can
ask its engine directly. Nothing here is timed: the test waits, with generous deadlines, for
the reports to have arrived.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from control.echo.app import EchoApp
from control.media.engine import AudioEngine, ParticipantId, RoomId
from control.media.mixer import EmbeddedMixer
from control.media.rtcpsession import StreamQuality
from control.media.tone import sine
from control.server import Server
from tests.peers.baresip import BaresipError, BaresipProcess, write_wav
from tests.peers.inprocess import running_server

pytestmark = [pytest.mark.peer("baresip"), pytest.mark.timeout(180)]

ROOM = RoomId("rtcp@127.0.0.1")
SOURCE_SECONDS = 120.0  # outlasts the call: the test hangs up, not aufile
DEADLINE = 60.0  # baresip reports about every 5 s; this only bounds a broken run


class Chorus:
    def __init__(self, server: Server, sip_port: int) -> None:
        self.server = server
        self.sip_port = sip_port

    @property
    def engine(self) -> EmbeddedMixer:
        engine = self.server.applications["conference"].engine  # type: ignore[attr-defined]
        assert isinstance(engine, EmbeddedMixer)
        return engine


@pytest.fixture
async def chorus(tmp_path: Path) -> AsyncIterator[Chorus]:
    async with running_server(
        tmp_path / "spool",
        rtp={"codecs": ["PCMU", "G722", "opus"], "timeout": 60.0, "rtcp_interval": 0.5},
    ) as (server, port):
        yield Chorus(server, port)


async def call_up(phone: BaresipProcess, uri: str) -> None:
    """Dial and wait until the call is established and RTP flows both ways."""
    await asyncio.to_thread(phone.dial, uri)
    try:
        await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 15)
        await asyncio.to_thread(phone.wait_event, "CALL_RTPESTAB", 15)
    except BaresipError as exc:
        raise AssertionError(f"baresip's call to {uri} did not come up: {exc}") from None


async def leg_quality(engine: AudioEngine) -> StreamQuality | None:
    """The one participant's figures in ROOM (through the engine interface)."""
    figures: dict[tuple[RoomId, ParticipantId], StreamQuality] = await engine.quality()
    legs = [quality for (room, _), quality in figures.items() if room == ROOM]
    assert len(legs) <= 1, figures
    return legs[0] if legs else None


def _complete(quality: StreamQuality | None, baresip: list[dict[str, Any]]) -> bool:
    """Both sides have reported on each other, round trips included."""
    return (
        quality is not None
        and quality.reports_received > 0
        and quality.rtt is not None
        and any(stats.get("rtt", 0) > 0 for stats in baresip)
    )


@pytest.mark.parametrize(
    ("rtcp_mux", "mediaenc"),
    [(True, None), (False, None), (True, "srtp-mand")],
    ids=["rtcp-mux", "port-plus-one", "srtcp-mux"],
)
async def test_baresip_and_the_room_read_each_others_reports(
    chorus: Chorus, tmp_path: Path, rtcp_mux: bool, mediaenc: str | None
) -> None:
    wav = write_wav(tmp_path / "tone.wav", sine(440.0, SOURCE_SECONDS, 8000, 0.4), 8000)
    phone = BaresipProcess(wav, codec="PCMU/8000/1", rtcp_mux=rtcp_mux, mediaenc=mediaenc)
    await asyncio.to_thread(phone.start)
    try:

        def why() -> str:
            return f"\n--- baresip ---\n{phone.log()[-4000:]}"

        await call_up(phone, f"sip:{ROOM.split('@')[0]}@127.0.0.1:{chorus.sip_port}")
        engine = chorus.engine
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        quality = await leg_quality(engine)
        while not _complete(quality, phone.rtcp_stats()) and loop.time() < deadline:
            await asyncio.sleep(0.2)
            quality = await leg_quality(engine)
        baresip = phone.rtcp_stats()
        assert quality is not None, f"no audio leg in {ROOM}{why()}"
        assert _complete(quality, baresip), f"{quality}\nbaresip: {baresip}{why()}"

        # Our side: baresip's reports arrived (muxed or on port + 1) and parsed.
        # baresip 1.0 opens a muxed stream with one APP "PING" compound that it sends
        # unprotected even under SRTP: SRTCP drops it and counts it (RFC 3711 §3.4).
        plain = 1 if rtcp_mux and mediaenc is not None else 0
        counters = await engine.stats()
        assert counters.rtcp_received > 0 and counters.rtcp_errors <= plain, counters
        assert counters.rtcp_sent > 0, counters
        ((room, participant),) = [key for key in await engine.quality() if key[0] == ROOM]
        stream = engine.stream(room, participant)
        assert stream is not None and stream.terms.rtcp_mux is rtcp_mux
        assert stream.stats.rtcp_received > 0 and stream.stats.rtcp_errors <= plain
        assert stream.rtcp_latched is not None and stream.latched is not None
        if rtcp_mux:  # RFC 5761: their RTCP came from their RTP port
            assert stream.rtcp_latched == stream.latched
        else:  # RFC 3550 §11: from the port after it
            assert stream.rtcp_latched[1] == stream.latched[1] + 1

        # What baresip says about the stream the room sends it.
        assert quality.remote_packets_lost == 0, quality
        assert quality.remote_fraction_lost == 0.0, quality
        assert quality.remote_jitter is not None, quality
        assert math.isfinite(quality.remote_jitter) and quality.remote_jitter >= 0.0, quality
        assert quality.rtt is not None and math.isfinite(quality.rtt), quality
        # Non-negative, and seconds, not NTP units (a unit slip reads in the thousands).
        assert 0.0 <= quality.rtt < 10.0, quality

        # What the room measured of baresip's stream.
        assert quality.packets_received > 0 and quality.packets_lost == 0, quality
        assert math.isfinite(quality.jitter) and quality.jitter >= 0.0, quality
        assert quality.reports_sent > 0, quality

        # baresip read our reports: one CALL_RTCP per compound, our blocks saying it lost
        # nothing, and an RTT worked out from our echo of its sender report.
        assert baresip, f"baresip saw none of our RTCP{why()}"
        assert all(stats["tx"]["lost"] == 0 for stats in baresip), baresip
        assert all(stats["rx"]["lost"] == 0 for stats in baresip), baresip
        assert any(stats["rtt"] > 0 for stats in baresip), baresip

        await asyncio.to_thread(phone.hangup)
        await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 15)
    finally:
        await asyncio.to_thread(phone.stop)


async def test_baresip_and_the_echo_read_each_others_reports_over_opus_with_rtcp_mux(
    chorus: Chorus, tmp_path: Path
) -> None:
    wav = write_wav(tmp_path / "tone.wav", sine(440.0, SOURCE_SECONDS, 48000, 0.4), 48000)
    # baresip names mono Opus opus/48000/1 (the SDP says opus/48000/2, RFC 7587); another
    # name falls back to offering every codec, and the echo would take PCMU.
    phone = BaresipProcess(wav, codec="opus/48000/1", rtcp_mux=True)
    await asyncio.to_thread(phone.start)
    try:
        await call_up(phone, f"sip:echo@127.0.0.1:{chorus.sip_port}")
        echo = chorus.server.applications["echo"]
        assert isinstance(echo, EchoApp)
        (call,) = echo.calls
        reflector = call.media.reflector
        rtcp = reflector.rtcp
        assert rtcp is not None
        assert reflector.rtcp_mux, "the echo did not answer a=rtcp-mux"
        assert reflector.rtcp_interval == 0.5  # [rtp] rtcp_interval

        def done() -> bool:
            return rtcp.rtt is not None and any(s["rtt"] > 0 for s in phone.rtcp_stats())

        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while not done() and loop.time() < deadline:
            await asyncio.sleep(0.2)
        quality = rtcp.quality()
        baresip = phone.rtcp_stats()
        assert done(), f"{quality}\nbaresip: {baresip}\n{phone.log()[-4000:]}"
        assert rtcp.clock_rate == 48000  # RFC 7587 §4.1, from the negotiated rtpmap
        assert reflector.rtcp_errors == 0 and reflector.rtcp_sent > 0
        assert reflector.rtcp_remote == reflector.remote  # muxed: their RTP port
        assert quality.rtt is not None and 0.0 <= quality.rtt < 10.0, quality
        assert quality.remote_packets_lost == 0 and quality.packets_lost == 0, quality
        assert quality.remote_jitter is not None and math.isfinite(quality.remote_jitter)
        assert all(stats["tx"]["lost"] == 0 for stats in baresip), baresip
        await asyncio.to_thread(phone.hangup)
        await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 15)
    finally:
        await asyncio.to_thread(phone.stop)
