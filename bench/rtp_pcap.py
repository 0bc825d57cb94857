"""Write RTP streams as pcap files that SIPp's `play_pcap_audio` replays.

SIPp ships one capture (`/usr/share/sip-tester/g711a.pcap`, 7 s of A-law speech). Its
replay does not rewrite RTP sequence numbers or timestamps, so a capture played twice in
one call runs its sequence numbers backwards and a receiver drops the second pass as
duplicates. The mixer benchmark therefore writes one capture per codec and talker that
is as long as the call: a tone encoded with Chorus's own codecs (control/media/codecs.py),
one packet per 20 ms, sequence numbers and timestamps running on, one SSRC.

The tone carries a little white noise (-50 dBFS by default). A pure tone is perfectly
periodic, and a CELP decoder (Speex) that starts even one frame after its encoder never
converges on one: the long-term predictor keeps the mismatch alive, and what it plays is
wideband junk. Noise, as any real voice has, lets every decoder lock on within frames.

The file is classic libpcap (magic a1b2c3d4, microsecond timestamps, link type 1
Ethernet): SIPp's `prepare_pcap` reads Ethernet + IPv4 + UDP and keeps the UDP part,
replacing the ports and addresses with the call's own when it plays.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from control.media.codecs import Codec, codec_for
from control.media.rtp import RtpPacket
from control.media.tone import FULL_SCALE, sine

__all__ = ["CODECS", "BenchCodec", "tone_payloads", "write_rtp_pcap"]


@dataclass(frozen=True, slots=True)
class BenchCodec:
    """One codec as the benchmark offers it in SDP."""

    label: str  # the name in RESULTS.md
    encoding: str  # rtpmap encoding name
    clock_rate: int
    channels: int
    payload_type: int

    @property
    def rtpmap(self) -> str:
        base = f"{self.encoding}/{self.clock_rate}"
        return f"{base}/{self.channels}" if self.channels != 1 else base

    def new(self) -> Codec:
        factory = codec_for(self.encoding, self.clock_rate, self.channels)
        if factory is None:
            raise ValueError(f"no codec for {self.rtpmap}")
        return factory()


CODECS: dict[str, BenchCodec] = {
    "G711": BenchCodec("G.711 A-law", "PCMA", 8000, 1, 8),
    "G722": BenchCodec("G.722", "G722", 8000, 1, 9),
    "Opus": BenchCodec("Opus", "opus", 48000, 2, 111),
    "SpeexWB": BenchCodec("Speex-WB", "speex", 16000, 1, 97),
}

PTIME_S = 0.02


def tone_payloads(
    codec: BenchCodec, freq: float, seconds: float, amplitude: float, noise: float = 0.003
) -> list[bytes]:
    """Encoded 20 ms frames of a `freq` Hz tone in white noise (`noise` of full scale, RMS)
    lasting `seconds`."""
    enc = codec.new()
    n = enc.frame_samples(20)
    frames = int(round(seconds / PTIME_S))
    pcm = sine(freq, frames * PTIME_S, enc.sample_rate, amplitude).astype(np.float64)
    if amplitude and noise:
        pcm += noise * FULL_SCALE * np.random.default_rng(int(freq)).standard_normal(pcm.size)
    samples = np.clip(np.round(pcm), -32768, 32767).astype(np.int16)
    return [enc.encode(samples[i * n : (i + 1) * n]) for i in range(frames)]


def _ipv4_udp(payload: bytes, src_port: int, dst_port: int) -> bytes:
    udp_len = 8 + len(payload)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + udp_len,
        0,
        0x4000,  # don't fragment
        64,
        17,
        0,
        bytes([127, 0, 0, 1]),
        bytes([127, 0, 0, 1]),
    )
    words = struct.unpack("!10H", ip)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    ip = ip[:10] + struct.pack("!H", ~total & 0xFFFF) + ip[12:]
    # UDP checksum 0 (none): SIPp recomputes it from the partial sum of the payload.
    udp = struct.pack("!HHHH", src_port, dst_port, udp_len, 0)
    ether = b"\x00" * 12 + b"\x08\x00"
    return ether + ip + udp + payload


def write_rtp_pcap(
    path: Path,
    codec: BenchCodec,
    freq: float,
    seconds: float,
    *,
    amplitude: float = 0.08,
    ssrc: int = 0x5EED0001,
) -> int:
    """Write `seconds` of a tone as RTP in a pcap at `path`; returns the packet count."""
    payloads = tone_payloads(codec, freq, seconds, amplitude)
    step = codec.new().timestamp_step(20)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    base = 1_700_000_000
    for k, payload in enumerate(payloads):
        rtp = RtpPacket(
            codec.payload_type, (1000 + k) & 0xFFFF, (k * step) & 0xFFFFFFFF, ssrc, payload
        ).serialize()
        frame = _ipv4_udp(rtp, 6000, 6000)
        usec = k * 20_000
        out.append(
            struct.pack("<IIII", base + usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        )
        out.append(frame)
    path.write_bytes(b"".join(out))
    return len(payloads)
