"""Send a tone as RTP and collect what comes back: the test side of audio checks."""

from __future__ import annotations

import asyncio
import random
from typing import cast

import numpy as np
import numpy.typing as npt

from control.media.codecs import Codec
from control.media.rtp import RtpError, RtpPacket
from control.media.tone import sine


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            self.packets.append(RtpPacket.parse(data))
        except RtpError:
            pass


class RtpToneClient:
    """Binds a local RTP port; ``play`` sends a tone to the far end, ``heard`` decodes replies."""

    def __init__(self, codec: Codec, payload_type: int, *, host: str = "127.0.0.1") -> None:
        self.codec = codec
        self.payload_type = payload_type
        self.host = host
        self.collector = _Collector()
        self.port = 0

    async def open(self) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self.collector, local_addr=(self.host, 0)
        )
        self.port = transport.get_extra_info("sockname")[1]
        return self.port

    def close(self) -> None:
        if self.collector.transport is not None:
            self.collector.transport.close()

    async def play(self, remote: tuple[str, int], freq: float, seconds: float) -> int:
        """Send a tone in real time; returns the number of packets sent."""
        assert self.collector.transport is not None
        rate = self.codec.sample_rate
        frame = self.codec.frame_samples(20)
        pcm = sine(freq, seconds, rate, amplitude=0.3)
        seq = random.randrange(65536)
        ts = random.randrange(2**32)
        ssrc = random.getrandbits(32)
        step = self.codec.timestamp_step(20)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in range(len(pcm) // frame):
            payload = self.codec.encode(pcm[index * frame : (index + 1) * frame])
            packet = RtpPacket(
                payload_type=self.payload_type,
                sequence=(seq + index) & 0xFFFF,
                timestamp=(ts + index * step) & 0xFFFFFFFF,
                ssrc=ssrc,
                payload=payload,
                marker=index == 0,
            )
            self.collector.transport.sendto(packet.serialize(), remote)
            # Real-time pacing, as a phone sends; not a timing assertion.
            delay = start + (index + 1) * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        return len(pcm) // frame

    def heard(self, decoder: Codec) -> npt.NDArray[np.int16]:
        packets = sorted(self.collector.packets, key=lambda p: p.sequence)
        frames = [decoder.decode(p.payload) for p in packets]
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(frames).astype(np.int16)
