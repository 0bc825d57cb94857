"""Two real peers in one conference room: baresip and SIPp each hear the other.

The room is mix-minus: a participant hears everyone but themselves. baresip (Debian
`baresip-core`) sends a pure tone for the whole call and records what it hears; SIPp runs
`uac_conference_pcap.xml` in two phases that never overlap:

1. SIPp plays `/usr/share/sip-tester/g711a.pcap` (7.08 s of recorded speech, G.711 A-law)
   with its RTP echo switched off. baresip must hear that speech — found in its recording
   by normalised cross-correlation with the pcap's own decoded audio, a waveform match no
   other source could produce — and must not hear its own tone (mix-minus).
2. SIPp switches `-rtp_echo` on: every packet the room sends SIPp goes straight back. The
   room sends SIPp only baresip's audio, so baresip now hears its tone — which it can only
   get by way of SIPp, since phase 1 showed the room never returns it directly. That is
   SIPp having received baresip's audio.

SIPp cannot analyse audio itself, hence the echo. Running the pcap and the echo at once
does not work: both leave SIPp's one media port, so the room sees two SSRCs on one leg
and follows one source at a time (RFC 3550 §8.2), garbling both.

Legs differ in codec: SIPp is PCMA at 30 ms packets, baresip PCMU or G.722 at 20 ms, so
the mixer decodes, resamples and re-encodes every direction.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from control.media.codecs import Resampler, alaw_decode
from control.media.rtp import RtpPacket
from control.media.tone import dominant_frequencies, sine, steady_tone_power, tone_power
from tests.peers.baresip import BaresipProcess, write_wav
from tests.peers.chorus import ChorusProcess
from tests.peers.ports import free_port
from tests.peers.sipp import run_sipp

PCAP = Path("/usr/share/sip-tester/g711a.pcap")

pytestmark = [
    pytest.mark.timeout(40),
    pytest.mark.peer("baresip", "sipp", "sipp-pcap"),
]

RATE = 8000  # the pcap's rate; recordings are compared at this rate
TONE = 2000.0  # Hz: the pcap's speech has little energy here (about -50 dB in a 40 Hz band)
HEARD = -20.0  # dB (full-scale sine = 0): baresip sends the tone at about -8
ABSENT = -35.0  # dB: speech and codec noise only, no tone
MATCH = 0.8  # normalised cross-correlation: same waveform (0.97-0.99 measured); speech
# against unrelated audio stays well under 0.5
ECHO_MS = 2500  # length of SIPp's echo phase (sipp -d)
SOURCE_SECONDS = 16.0  # baresip's WAV outlasts SIPp's call (~11 s); the test hangs up


# --- the pcap --------------------------------------------------------------------------

_PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}  # microsecond pcap
_PCAP_MAGIC_NS = {b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}  # nanosecond pcap
_LINK_HEADER = {1: 14, 101: 0, 0: 4, 113: 16}  # Ethernet, raw IP, BSD loopback, Linux SLL


def pcap_rtp(data: bytes) -> list[RtpPacket]:
    """The RTP packets of a classic libpcap file of IPv4/UDP/RTP, in capture order.

    Enough of the libpcap format for SIPp's sample captures: a 24-octet global header
    (magic, version, snaplen, link type), then per packet a 16-octet record header
    whose third field is the captured length. IPv4 header length from IHL (RFC 791),
    8-octet UDP header (RFC 768), RTP from RFC 3550 §5.1.
    """
    magic = data[:4]
    endian = _PCAP_MAGIC.get(magic) or _PCAP_MAGIC_NS.get(magic)
    if endian is None:
        raise ValueError(f"not a libpcap file (magic {magic.hex()})")
    (link,) = struct.unpack_from(endian + "I", data, 20)
    if link not in _LINK_HEADER:
        raise ValueError(f"unsupported link type {link}")
    packets: list[RtpPacket] = []
    offset = 24
    while offset + 16 <= len(data):
        _, _, captured, _ = struct.unpack_from(endian + "IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        ip = frame[_LINK_HEADER[link] :]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue  # not IPv4/UDP
        udp = ip[(ip[0] & 0x0F) * 4 :]
        packets.append(RtpPacket.parse(udp[8:]))
    return packets


def pcap_audio() -> npt.NDArray[np.int16]:
    """The speech SIPp plays, as 8 kHz PCM: every A-law payload decoded, in order."""
    return np.concatenate([alaw_decode(p.payload) for p in pcap_rtp(PCAP.read_bytes())])


def best_match(signal: npt.ArrayLike, reference: npt.ArrayLike) -> tuple[float, int]:
    """Where `reference` best lines up inside `signal`: (normalised correlation, offset).

    The correlation is the cosine between `reference` and each window of `signal` of the
    same length: 1.0 for the same waveform at any gain, near 0 for unrelated audio.
    """
    x = np.asarray(signal, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if x.size < ref.size or not ref.any():
        return 0.0, 0
    size = 1 << (x.size + ref.size - 1).bit_length()
    dot = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(ref, size)), size)
    dot = dot[: x.size - ref.size + 1]
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    window = energy[ref.size :] - energy[: x.size - ref.size + 1]
    score = dot / np.sqrt(np.maximum(window, 1e-9) * float(np.dot(ref, ref)))
    best = int(np.argmax(score))
    return float(score[best]), best


def test_g711a_pcap_is_seven_seconds_of_alaw_speech() -> None:
    """What SIPp's sample capture holds, so the conference test can recognise it."""
    packets = pcap_rtp(PCAP.read_bytes())
    assert len(packets) == 236
    assert {p.payload_type for p in packets} == {8}  # PCMA, RFC 3551 §6
    assert {len(p.payload) for p in packets} == {240}  # 30 ms at 8 kHz
    assert len({p.ssrc for p in packets}) == 1
    steps = {(b.sequence - a.sequence) % 65536 for a, b in zip(packets, packets[1:], strict=False)}
    assert steps == {1}
    pcm = pcap_audio()
    assert len(pcm) == 236 * 240  # 7.08 s
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160).astype(np.float64)
    level = 10 * np.log10(np.maximum((frames**2).mean(axis=1), 1e-9) / 32768**2)
    assert level[:25].max() < -60  # it opens with 0.5 s of silence
    assert np.median(level[30:]) > -35  # then speech, level varying word by word
    # Voiced speech: a pitch near 100-200 Hz, energy mostly under 1 kHz, little at TONE.
    assert 80 < dominant_frequencies(pcm, RATE, 1)[0] < 250
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / RATE)
    assert spectrum[freqs < 1000].sum() > 0.8 * spectrum.sum()
    assert tone_power(pcm, RATE, TONE) < ABSENT - 10


# --- the room ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess() as process:
        yield process
        assert process.alive, process.log()


@pytest.mark.parametrize(
    ("codec", "rate"), [("PCMU/8000/1", 8000), ("G722/16000/1", 16000)], ids=["pcmu", "g722"]
)
def test_baresip_and_sipp_hear_each_other(
    chorus: ChorusProcess, tmp_path: Path, codec: str, rate: int
) -> None:
    room = f"peers-{rate}"
    uri = f"sip:{room}@127.0.0.1:{chorus.sip_port}"
    source = write_wav(tmp_path / "tone.wav", sine(TONE, SOURCE_SECONDS, rate, 0.4), rate)
    with BaresipProcess(source, codec=codec) as ua:

        def why() -> str:
            return f"\n--- baresip ---\n{ua.log()[-4000:]}\n--- chorus ---\n{chorus.log()}"

        ua.dial(uri)
        ua.wait_event("CALL_ESTABLISHED", 10)
        sipp = run_sipp(
            "uac_conference_pcap",
            f"127.0.0.1:{chorus.sip_port}",
            service=room,
            pause_ms=ECHO_MS,
            extra_args=["-rtp_echo", "-mp", str(free_port("udp"))],
            timeout=20,
        )
        assert sipp.ok, sipp.describe() + why()
        assert "CALL_CLOSED" not in ua.event_types(), f"baresip's call ended early{why()}"
        ua.hangup()
        ua.wait_event("CALL_CLOSED", 5)
    assert ua.returncode == 0, why()

    sent, heard = ua.recordings("enc"), ua.recordings("dec")
    assert len(sent) == 1 and len(heard) == 1, why()
    assert heard[0].rate == rate, why()
    assert tone_power(sent[0].samples, rate, TONE) > HEARD, "baresip did not send its tone"
    pcm = Resampler(rate, RATE).process(heard[0].samples)
    reference = pcap_audio()

    # SIPp -> baresip: the pcap's speech is in baresip's recording, waveform and all. Each
    # second of it is matched on its own, so a jitter buffer slipping a frame cannot hide it.
    chunks = range(RATE, reference.size - RATE + 1, RATE)  # after the opening silence
    found = [best_match(pcm, reference[at : at + RATE]) for at in chunks]
    assert all(score > MATCH for score, _ in found), f"SIPp's speech not heard: {found}{why()}"
    offsets = [offset for _, offset in found]
    assert offsets == sorted(offsets), f"SIPp's speech out of order: {found}"
    start = max(0, offsets[0] - chunks[0])
    end = offsets[-1] + reference.size - chunks[-1]

    # Mix-minus: while SIPp talked (echo off), baresip sent its tone but did not hear it.
    talking = pcm[start:end]
    assert steady_tone_power(talking, RATE, TONE) < ABSENT, f"baresip heard itself{why()}"

    # baresip -> SIPp: once SIPp echoes, the tone comes back, and only SIPp can return it.
    echoing = pcm[end:]
    assert echoing.size > RATE, f"the recording stops at the pcap's end{why()}"
    assert tone_power(echoing, RATE, TONE) > HEARD, f"SIPp returned no tone{why()}"
    assert abs(dominant_frequencies(echoing, RATE, 1)[0] - TONE) < 20, why()
