"""A baresip phone and a SIPp phone playing recorded audio meet in one conference room.

SIPp plays /usr/share/sip-tester/g711a.pcap (7 s of speech-band A-law audio, its energy
between 100 and 600 Hz) into the room; baresip sends a 3 kHz tone, where that recording has
next to nothing (−66 dB). With mix-minus each must hear the other and not itself:
- baresip's recording of what it received holds the recording's speech band, and not its
  own 3 kHz tone;
- what reached SIPp's media port (seen by a passive loopback sniffer, since SIPp cannot
  report received audio) holds the 3 kHz tone, and not the recording SIPp itself sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from control.media.codecs import alaw_decode, ulaw_decode
from control.media.rtp import RtpError, RtpPacket
from control.media.tone import sine, tone_power
from tests.peers.baresip import BaresipProcess, baresip_available, write_wav
from tests.peers.chorus import ChorusProcess
from tests.peers.ports import free_ports
from tests.peers.sipp import run_sipp_async, scenario_path, sipp_available
from tests.peers.sniff import LoopbackUdpSniffer, can_sniff

pytestmark = [
    pytest.mark.peer,
    pytest.mark.timeout(90),
    pytest.mark.skipif(not baresip_available(), reason="baresip (baresip-core) not installed"),
    pytest.mark.skipif(not sipp_available(), reason="sipp (sip-tester) not installed"),
    pytest.mark.skipif(not can_sniff(), reason="the loopback sniffer needs root"),
]

TONE = 3000.0
SPEECH_BAND = (140.0, 340.0, 530.0)  # the recording's strongest components
HEARD = -40.0  # dB re full scale
ABSENT = -55.0


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess() as process:
        yield process
        assert process.alive, process.log()


def decode(payloads: list[bytes]) -> np.ndarray:
    packets = []
    for data in payloads:
        try:
            packets.append(RtpPacket.parse(data))
        except RtpError:
            continue
    frames = []
    for packet in sorted(packets, key=lambda p: (p.ssrc, p.sequence)):
        if packet.payload_type == 8:
            frames.append(alaw_decode(packet.payload))
        elif packet.payload_type == 0:
            frames.append(ulaw_decode(packet.payload))
    return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)


async def test_baresip_and_sipp_hear_each_other(chorus: ChorusProcess, tmp_path: Path) -> None:
    room = f"sip:peers@127.0.0.1:{chorus.sip_port}"
    sipp_media = free_ports(1)[0]
    tone = write_wav(tmp_path / "tone.wav", sine(TONE, 5.0, 8000, 0.4), 8000)
    with LoopbackUdpSniffer(sipp_media) as sniffer:
        sipp = asyncio.ensure_future(
            run_sipp_async(
                scenario_path("uac_pcap_audio.xml"),
                f"127.0.0.1:{chorus.sip_port}",
                service="peers",
                pause_ms=8000,
                extra_args=["-mp", str(sipp_media), "-mi", "127.0.0.1"],
                timeout=40,
            )
        )
        with BaresipProcess(tone, codec="PCMA/8000/1") as phone:
            phone.dial(room)
            phone.wait_event("CALL_ESTABLISHED", 15)
            closed = await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 20)
            assert "end of file" in str(closed.get("param")), f"{closed}\n{phone.log()}"
        result = await sipp
        assert result.returncode == 0, result.describe() + chorus.log()[-3000:]
        to_sipp = decode(sniffer.payloads())

    recordings = phone.recordings("dec")
    assert len(recordings) == 1, phone.log()
    heard = recordings[0].samples[8000 // 2 :]
    assert recordings[0].rate == 8000
    assert len(heard) > 2 * 8000, "baresip heard too little"
    speech = max(tone_power(heard, 8000, f) for f in SPEECH_BAND)
    assert speech > HEARD, f"baresip did not hear SIPp's recording ({speech:.1f} dB)"
    assert tone_power(heard, 8000, TONE) < ABSENT, "baresip heard its own tone back"

    assert len(to_sipp) > 2 * 8000, "too little audio reached SIPp's media port"
    assert tone_power(to_sipp, 8000, TONE) > HEARD, "SIPp did not get baresip's tone"
    own = max(tone_power(to_sipp, 8000, f) for f in SPEECH_BAND)
    assert own < ABSENT, f"SIPp got its own recording back ({own:.1f} dB)"
