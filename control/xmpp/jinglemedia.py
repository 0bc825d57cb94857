"""The media half of the Jingle ↔ SIP audio bridge: one Jingle audio content terminated by
Chorus with aiortc (ICE by aioice, DTLS-SRTP, Opus / G.722 / PCMU, as the issue asks of a
well-kept library), its audio carried as plain RTP on a local socket, the shape of audio a SIP
leg or the audio engine takes (an ordinary RTP participant).

aiortc hands over decoded audio, not RTP, so the leg transcodes: what the XMPP side sends is
resampled to the RTP side's codec and sent as 20 ms packets; what arrives as RTP is decoded,
resampled to 48 kHz and played to the XMPP side in real time (silence when nothing came,
at most ``queue_frames`` of backlog kept: older audio is dropped rather than delayed).

Signalling stays outside: the leg takes and returns Jingle contents (control/xmpp/
jinglesdp.py's mapping of aiortc's SDP), so the session layer decides when to answer. aiortc
gathers every candidate before it returns a description, so the contents it returns are
complete (no trickle out); trickled candidates in go in with :meth:`WebRtcLeg.add_candidates`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

import aioice.ice
import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp as aiortc_candidate

from control.media.codecs import Codec, codec_for
from control.media.rtp import RtpError, RtpPacket
from control.sip import sdp
from control.xmpp.jingle import Content, IceTransport
from control.xmpp.jinglesdp import candidate_to_sdp, jingle_to_sdp, sdp_to_jingle

__all__ = [
    "FRAME_SAMPLES",
    "SIP_CODECS",
    "WEBRTC_RATE",
    "PacedTrack",
    "WebRtcLeg",
    "audio_frame",
    "gathering_on",
    "use_answer",
    "webrtc_audio",
]

WEBRTC_RATE = 48000  # the PCM rate on aiortc's side
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
Groups = tuple[tuple[str, tuple[str, ...]], ...]
Pcm = npt.NDArray[np.int16]
# The bridged codecs (jinglecall.BRIDGED_CODECS) as the SIP side's offer lists them.
SIP_CODECS: tuple[tuple[str, int], ...] = (("opus", 48000), ("G722", 8000), ("PCMU", 8000))


def _resampler(rate: int) -> av.AudioResampler:
    return av.AudioResampler(format="s16", layout="mono", rate=rate)


def audio_frame(pcm: Pcm, *, rate: int = WEBRTC_RATE, pts: int = 0) -> av.AudioFrame:
    """Mono int16 PCM as the AudioFrame aiortc encodes (``pts`` in samples)."""
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, rate)
    return frame


def _resample(resampler: av.AudioResampler, pcm: Pcm, rate: int) -> Pcm:
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(audio_frame(pcm, rate=rate))]
    return np.concatenate(out).astype(np.int16) if out else np.zeros(0, dtype=np.int16)


class PacedTrack(MediaStreamTrack):
    """An aiortc audio track of 20 ms frames at 48 kHz paced in real time (as aiortc's own
    AudioStreamTrack paces its silence); subclasses say what each frame holds."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pts = 0
        self._start: float | None = None

    def next_pcm(self, pts: int) -> Pcm:
        """The :data:`FRAME_SAMPLES` samples starting at sample ``pts``."""
        raise NotImplementedError

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            await asyncio.sleep(max(0.0, self._start + self._pts / WEBRTC_RATE - time.monotonic()))
        return audio_frame(self.next_pcm(self._pts), pts=self._pts)


class _ToXmpp(PacedTrack):
    """What the RTP side said, played to the XMPP side (silence when nothing came)."""

    def __init__(self, max_frames: int) -> None:
        super().__init__()
        self._frames: collections.deque[Pcm] = collections.deque(maxlen=max_frames)
        self._pending = np.zeros(0, dtype=np.int16)

    def push(self, pcm: Pcm) -> None:
        self._pending = np.concatenate([self._pending, pcm])
        while self._pending.size >= FRAME_SAMPLES:
            self._frames.append(self._pending[:FRAME_SAMPLES])
            self._pending = self._pending[FRAME_SAMPLES:]

    def next_pcm(self, pts: int) -> Pcm:
        return self._frames.popleft() if self._frames else np.zeros(FRAME_SAMPLES, np.int16)


class _RtpSide(asyncio.DatagramProtocol):
    def __init__(self, leg: WebRtcLeg) -> None:
        self.leg = leg
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.leg._rtp_in(data)


class WebRtcLeg:
    """One audio content: aiortc toward the XMPP peer, plain RTP (``codec``, payload type
    ``payload_type``) on ``rtp_host`` toward the SIP side; ``queue_frames`` bounds the
    20 ms frames waiting to be played to the XMPP side (25: half a second)."""

    def __init__(
        self,
        codec: Codec,
        payload_type: int,
        *,
        rtp_host: str = "127.0.0.1",
        queue_frames: int = 25,
    ) -> None:
        self.codec = codec
        self.payload_type = payload_type
        self.rtp_host = rtp_host
        self.rtp_port = 0
        self.rtp_remote: tuple[str, int] | None = None
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._to_xmpp = _ToXmpp(queue_frames)
        self._in_resampler = _resampler(WEBRTC_RATE)
        self._rtp = _RtpSide(self)
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = random.randrange(65536)
        self._ts = random.randrange(2**32)
        self._ssrc = random.getrandbits(32)
        self.packets_in = 0  # RTP packets decoded from the SIP side
        self.packets_out = 0  # RTP packets sent to the SIP side
        self.pc.on("track", self._track)

    async def open(self) -> int:
        """Bind the RTP socket; returns its port (for the SIP side's SDP)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self._rtp, local_addr=(self.rtp_host, 0)
        )
        self.rtp_port = transport.get_extra_info("sockname")[1]
        return self.rtp_port

    def connect_rtp(self, remote: tuple[str, int]) -> None:
        """Where the SIP side (the engine, a SIP UA) wants its RTP."""
        self.rtp_remote = remote

    def rtp_offer(self, origin: sdp.Origin) -> sdp.SessionDescription:
        """The SIP-side offer for the RTP socket (bound by :meth:`open`): the leg's one codec
        in 20 ms packets, what an INVITE to a SIP user or the audio engine's attach takes."""
        channels = self.codec.channels if self.codec.channels != 1 else None
        rtpmap = sdp.RtpMap(self.payload_type, self.codec.name, self.codec.clock_rate, channels)
        media = sdp.audio_media(self.rtp_port, [rtpmap], ptime=20)
        connection = sdp.Connection.for_address(self.rtp_host)
        return sdp.build_offer(origin=origin, connection=connection, media=[media])

    def rtp_answered(self, answer: sdp.SessionDescription) -> None:
        """The SIP side's answer to :meth:`rtp_offer`: where its RTP goes. An answer that
        refuses the stream or picks another codec is :class:`~control.sip.sdp.SdpError` 488
        (the leg carries one codec; RFC 3264 §6.1 lets the answer only narrow the offer)."""
        media = next((m for m in answer.media if m.media == "audio" and not m.rejected), None)
        if media is None:
            raise sdp.SdpError(488, "the answer refuses the audio stream")
        connection = answer.connection_of(media)
        if connection is None or not media.rtpmaps():
            raise sdp.SdpError(488, "the audio answer has no address or no codec")
        first = media.rtpmaps()[0]
        if first.payload_type != self.payload_type:
            raise sdp.SdpError(488, f"the answer picked payload type {first.payload_type}")
        self.connect_rtp((connection.address, media.port))

    # ------------------------------------------------------------- XMPP side

    def _add_track(self) -> None:
        transceiver = next((t for t in self.pc.getTransceivers() if t.kind == "audio"), None)
        if transceiver is None:
            self.pc.addTransceiver(self._to_xmpp, direction="sendrecv")
        else:
            transceiver.sender.replaceTrack(self._to_xmpp)
            transceiver.direction = "sendrecv"

    async def _local(self, kind: str, author: str) -> tuple[tuple[Content, ...], Groups]:
        description = await (self.pc.createOffer() if kind == "offer" else self.pc.createAnswer())
        await self.pc.setLocalDescription(description)
        return sdp_to_jingle(sdp.parse(self.pc.localDescription.sdp), author=author)

    async def _remote(
        self, contents: Sequence[Content], groups: Groups, kind: str, author: str
    ) -> None:
        origin = sdp.Origin("-", "1", 1, "IN", "IP4", "0.0.0.0")
        remote = jingle_to_sdp(contents, author=author, origin=origin, groups=groups)
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=bytes(remote).decode(), type=kind)
        )

    async def answer(
        self, contents: Sequence[Content], groups: Groups = ()
    ) -> tuple[tuple[Content, ...], Groups]:
        """The contents of our session-accept for a session-initiate's ``contents``."""
        await self._remote(contents, groups, "offer", "initiator")
        self._add_track()
        return await self._local("answer", "responder")

    async def offer(self) -> tuple[tuple[Content, ...], Groups]:
        """The contents of our session-initiate (the gateway calls an XMPP user)."""
        self._add_track()
        return await self._local("offer", "initiator")

    async def accepted(self, contents: Sequence[Content], groups: Groups = ()) -> None:
        """The peer's session-accept of our offer."""
        await self._remote(contents, groups, "answer", "responder")

    async def add_candidates(self, contents: Sequence[Content]) -> None:
        """Trickled candidates of a transport-info (XEP-0176 §5.4)."""
        for content in contents:
            if not isinstance(content.transport, IceTransport):
                continue
            for c in content.transport.candidates:
                candidate = aiortc_candidate(candidate_to_sdp(c))
                candidate.sdpMid = content.name
                await self.pc.addIceCandidate(candidate)

    def _track(self, track: MediaStreamTrack) -> None:
        task = asyncio.ensure_future(self._from_xmpp(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _from_xmpp(self, track: MediaStreamTrack) -> None:
        resampler = _resampler(self.codec.sample_rate)
        frame_samples = self.codec.frame_samples(20)
        pending = np.zeros(0, dtype=np.int16)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            for out in resampler.resample(frame):
                pending = np.concatenate([pending, out.to_ndarray().reshape(-1).astype(np.int16)])
            while pending.size >= frame_samples:
                self._rtp_out(pending[:frame_samples])
                pending = pending[frame_samples:]

    # -------------------------------------------------------------- RTP side

    def _rtp_out(self, pcm: Pcm) -> None:
        if self.rtp_remote is None or self._rtp.transport is None:
            return
        packet = RtpPacket(
            payload_type=self.payload_type,
            sequence=self._seq,
            timestamp=self._ts,
            ssrc=self._ssrc,
            payload=self.codec.encode(pcm),
            marker=self.packets_out == 0,
        )
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + self.codec.timestamp_step(20)) & 0xFFFFFFFF
        self._rtp.transport.sendto(packet.serialize(), self.rtp_remote)
        self.packets_out += 1

    def _rtp_in(self, data: bytes) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            return
        if packet.payload_type != self.payload_type:
            return  # telephone-event, comfort noise: not audio to play
        try:
            pcm = self.codec.decode(packet.payload)
        except ValueError:
            return
        self.packets_in += 1
        self._to_xmpp.push(_resample(self._in_resampler, pcm, self.codec.sample_rate))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._rtp.transport is not None:
            self._rtp.transport.close()
        with contextlib.suppress(Exception):
            await self.pc.close()

    @property
    def state(self) -> Any:
        """aiortc's connection state: new, connecting, connected, failed, closed."""
        return self.pc.connectionState


_gathering = 0
_aioice_default = aioice.ice.get_host_addresses


@contextlib.contextmanager
def gathering_on(addresses: Sequence[str]) -> Iterator[None]:
    """aioice gathers host candidates on ``addresses`` only while inside (module doc); the
    swap is counted, so overlapping gatherings of several calls restore it once."""
    global _gathering
    if not addresses:
        yield
        return
    wanted = list(addresses)
    _gathering += 1
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(wanted)
    try:
        yield
    finally:
        _gathering -= 1
        if _gathering == 0:
            aioice.ice.get_host_addresses = _aioice_default


def webrtc_audio(contents: Sequence[Content]) -> bool:
    """The leg (aiortc) terminates audio over ICE with DTLS-SRTP only: plain RTP, as XEP-0177
    raw UDP or ICE without a DTLS fingerprint, makes aiortc refuse the description, so such an
    offer or answer ends the call with :data:`~control.xmpp.jinglegw.PLAIN_RTP` instead."""
    return any(
        c.description is not None
        and c.description.media == "audio"
        and isinstance(c.transport, IceTransport)
        and c.transport.fingerprint is not None
        for c in contents
    )


def use_answer(leg: WebRtcLeg, answer: sdp.SessionDescription) -> None:
    """The SIP answer to the gateway's offer (control/xmpp/jinglegw.py): its first codec
    becomes the leg's (the offer listed several; the leg carries one), then where its RTP goes."""
    media = next((m for m in answer.media if m.media == "audio" and not m.rejected), None)
    if media is None or not media.rtpmaps():
        raise sdp.SdpError(488, "the answer refuses the audio stream")
    first = media.rtpmaps()[0]
    factory = codec_for(first.encoding, first.clock_rate, first.channels or 1, first.fmtp)
    if factory is None or (first.encoding.lower(), first.clock_rate) not in {
        (n.lower(), r) for n, r in SIP_CODECS
    }:
        raise sdp.SdpError(488, f"the answer picked {first.encoding}/{first.clock_rate}")
    leg.codec = factory()
    leg.payload_type = first.payload_type
    leg.rtp_answered(answer)
