"""A test RTP endpoint: offers audio, sends a tone (optionally over SRTP, lossy, reordered,
or with an SSRC change), and records and decodes what it hears.

It plays the part of a phone against the embedded mixer on 127.0.0.1: its SDP offer goes
through the real `sdp` model and its answer is built with `sdp.build_answer`, so the test
also checks the answer a room would send.
"""

from __future__ import annotations

import asyncio
import random
from typing import cast

import numpy as np
import numpy.typing as npt

from control.media.codecs import Codec, codec_for
from control.media.dtmf import TelephoneEvent, digit_to_event
from control.media.engine import AudioAnswer
from control.media.rtp import RtpError, RtpPacket
from control.media.srtp import (
    CryptoAttribute,
    SrtpContext,
    SrtpError,
    accept_answer,
    offer_crypto,
)
from control.media.tone import sine
from control.sip import sdp

__all__ = ["RtpEndpoint"]

LOOPBACK = "127.0.0.1"


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.datagrams.append(data)


class RtpEndpoint:
    """One participant's phone: `offer()` → engine → `answered()` → `play()` → `heard()`."""

    def __init__(
        self,
        encoding: str,
        clock_rate: int,
        payload_type: int,
        *,
        channels: int | None = None,
        srtp: bool = False,
        seed: int = 0,
    ) -> None:
        self.rtpmap = sdp.RtpMap(payload_type, encoding, clock_rate, channels)
        factory = codec_for(encoding, clock_rate, channels or 1)
        assert factory is not None, f"no codec {encoding}/{clock_rate}"
        self._encoder: Codec = factory()
        self._decoder: Codec = factory()
        self.sample_rate = self._encoder.sample_rate
        self.srtp = srtp
        self.rng = random.Random(seed)
        self._offered: list[CryptoAttribute] = offer_crypto(self.rng.randbytes) if srtp else []
        self._context: SrtpContext | None = None
        self.receiver = _Receiver()
        self.port = 0
        self.remote: tuple[str, int] | None = None
        self.answer: sdp.SessionDescription | None = None
        self._seen = 0
        self._packets: list[RtpPacket] = []
        self.ssrc: int | None = None

    async def send_dtmf(self, keys: str, *, payload_type: int = 101) -> None:
        """Press ``keys`` (RFC 4733 telephone-events, as offered): per key four packets
        20 ms apart with a growing duration, then the end packet three times (§2.5.1.4)."""
        assert self.receiver.transport is not None and self.remote is not None
        rng = self.rng
        ssrc = self.ssrc if self.ssrc is not None else rng.getrandbits(32)
        seq, ts = rng.getrandbits(16), rng.getrandbits(32)
        for key in keys:
            packets = [TelephoneEvent(digit_to_event(key), duration=160 * n) for n in (1, 2, 3, 4)]
            packets += [TelephoneEvent(digit_to_event(key), end=True, duration=800)] * 3
            for index, event in enumerate(packets):
                packet = RtpPacket(payload_type, seq, ts, ssrc, event.serialize(), index == 0)
                seq = (seq + 1) & 0xFFFF
                data = packet.serialize()
                if self._context is not None:
                    data = self._context.protect(data)
                self.receiver.transport.sendto(data, self.remote)
                await asyncio.sleep(0.02)  # pacing as a phone sends; not a timing assertion
            ts = (ts + 1600) & 0xFFFFFFFF

    async def open(self) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self.receiver, local_addr=(LOOPBACK, 0)
        )
        self.port = transport.get_extra_info("sockname")[1]
        return self.port

    def close(self) -> None:
        if self.receiver.transport is not None:
            self.receiver.transport.close()

    def offer(self, direction: sdp.Direction = sdp.Direction.SENDRECV) -> sdp.SessionDescription:
        attrs = [sdp.Attribute("crypto", str(c)) for c in self._offered]
        media = sdp.audio_media(
            self.port,
            [self.rtpmap, sdp.RtpMap(101, "telephone-event", 8000, None, "0-16")],
            proto="RTP/SAVP" if self.srtp else "RTP/AVP",
            direction=direction,
            ptime=20,
            attributes=attrs,
        )
        origin = sdp.Origin("-", "1", 1, "IN", "IP4", LOOPBACK)
        offer = sdp.build_offer(
            origin=origin, connection=sdp.Connection.for_address(LOOPBACK), media=[media]
        )
        return sdp.parse(bytes(offer))  # as a room would receive it

    def answered(self, offer: sdp.SessionDescription, answer: AudioAnswer) -> sdp.MediaDescription:
        """Build the SDP answer a room would send and take our parameters from it."""
        origin = sdp.Origin("-", "2", 1, "IN", "IP4", answer.address)
        desc = sdp.build_answer(
            offer,
            [answer.accept],
            origin=origin,
            connection=sdp.Connection.for_address(answer.address),
        )
        return self.answered_sdp(sdp.parse(bytes(desc)))

    def answered_sdp(self, answer: sdp.SessionDescription) -> sdp.MediaDescription:
        """Take our parameters from the SDP answer the far end sent (over SIP)."""
        self.answer = answer
        media = answer.media[0]
        connection = answer.connection_of(media)
        assert connection is not None, "the answer has no c= line"
        self.remote = (connection.address, media.port)
        lines = media.get_all("crypto")
        if self.srtp:
            assert len(lines) == 1, "an SRTP answer carries exactly one crypto line"
            self._context = accept_answer(self._offered, lines[0]).context()
        else:
            assert not lines
        return media

    async def play(
        self,
        freq: float,
        seconds: float,
        *,
        loss: float = 0.0,
        reorder: float = 0.0,
        ssrc_change_at: float | None = None,
        amplitude: float = 0.3,
    ) -> int:
        """Send a tone in real time; returns the number of datagrams sent."""
        assert self.receiver.transport is not None and self.remote is not None
        codec = self._encoder
        frame = codec.frame_samples(20)
        step = codec.timestamp_step(20)
        pcm = sine(freq, seconds, self.sample_rate, amplitude=amplitude)
        rng = self.rng
        seq, ts, ssrc = rng.getrandbits(16), rng.getrandbits(32), rng.getrandbits(32)
        self.ssrc = ssrc  # send_dtmf keys on the stream's SSRC, as a phone does
        held: bytes | None = None
        sent = 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        change_frame = None if ssrc_change_at is None else int(ssrc_change_at / 0.02)
        for index in range(len(pcm) // frame):
            if index == change_frame:
                seq, ts, ssrc = rng.getrandbits(16), rng.getrandbits(32), rng.getrandbits(32)
            packet = RtpPacket(
                payload_type=self.rtpmap.payload_type,
                sequence=seq,
                timestamp=ts,
                ssrc=ssrc,
                payload=codec.encode(pcm[index * frame : (index + 1) * frame]),
                marker=index in (0, change_frame),
            )
            seq = (seq + 1) & 0xFFFF
            ts = (ts + step) & 0xFFFFFFFF
            data = packet.serialize()
            if self._context is not None:
                data = self._context.protect(data)
            if rng.random() >= loss:
                if held is None and rng.random() < reorder:
                    held = data  # goes out after the next packet
                else:
                    self.receiver.transport.sendto(data, self.remote)
                    sent += 1
                    if held is not None:
                        self.receiver.transport.sendto(held, self.remote)
                        sent += 1
                        held = None
            # Real-time pacing, as a phone sends; not a timing assertion.
            delay = start + (index + 1) * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        return sent

    def packets(self) -> list[RtpPacket]:
        """Everything heard so far, SRTP removed; undecodable datagrams are left out.

        Each datagram is unprotected once (SRTP's replay check refuses a second time).
        """
        fresh = self.receiver.datagrams[self._seen :]
        self._seen += len(fresh)
        for data in fresh:
            try:
                if self._context is not None:
                    data = self._context.unprotect(data)
                self._packets.append(RtpPacket.parse(data))
            except (SrtpError, RtpError):
                continue
        return list(self._packets)

    def heard(self, skip: float = 0.0) -> npt.NDArray[np.int16]:
        """Decoded audio in arrival order (loopback keeps order), minus the first `skip` s."""
        frames = [
            self._decoder.decode(p.payload)
            for p in self.packets()
            if p.payload_type == self.rtpmap.payload_type
        ]
        if not frames:
            return np.zeros(0, dtype=np.int16)
        pcm = np.concatenate(frames)
        return pcm[int(skip * self.sample_rate) :]
